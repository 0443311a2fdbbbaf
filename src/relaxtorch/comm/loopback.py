"""One-machine process groups that listen on 127.0.0.1 only.

``dist.TCPStore("127.0.0.1", ...)`` as a master listens on every interface (torch binds
the wildcard address whatever host it is given), and gloo binds the address the host
name resolves to.  A local run should not be reachable from the network: the store
here listens on a socket bound to 127.0.0.1 (``master_listen_fd``), and ranks pin gloo
to the loopback interface.
"""
from __future__ import annotations

import os
import socket
from datetime import timedelta

import torch.distributed as dist

HOST = "127.0.0.1"


def loopback_store(world_size: int, timeout: float) -> dist.TCPStore:
    """A master ``TCPStore`` on a free port of 127.0.0.1 (its ``port`` tells the ranks)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((HOST, 0))
        sock.listen(128)
        store = dist.TCPStore(HOST, sock.getsockname()[1], world_size, is_master=True,
                              wait_for_workers=False, timeout=timedelta(seconds=timeout),
                              master_listen_fd=sock.fileno())
    except BaseException:
        sock.close()
        raise
    sock.detach()  # the store's server owns the listening descriptor now (and closes it)
    return store


def loopback_interface() -> str | None:
    """The loopback interface's name ("lo" on Linux, "lo0" on macOS), if there is one."""
    try:
        names = {name for _, name in socket.if_nameindex()}
    except (OSError, AttributeError):
        return None
    return next((n for n in ("lo", "lo0") if n in names), None)


def pin_gloo_to_loopback() -> None:
    """Make this process's gloo sockets use the loopback interface (unless the user chose one)."""
    name = loopback_interface()
    if name is not None:
        os.environ.setdefault("GLOO_SOCKET_IFNAME", name)
