"""One 4-rank gloo world shared by the gossip, decentralized and Moniqua test modules.

Starting four spawned ranks costs several seconds on a 2-core machine, so the modules
share one pool (``tests/comm/_world.World``: bounded waits, restarts after a failure),
closed at interpreter exit.
"""
from __future__ import annotations

import atexit

from ._world import World

_POOLS: dict[int, World] = {}


def shared_world(size: int = 4) -> World:
    """The shared ``size``-rank world (started on its first ``run``)."""
    world = _POOLS.get(size)
    if world is None:
        world = _POOLS[size] = World(size, timeout=60)
        atexit.register(world.close)
    return world
