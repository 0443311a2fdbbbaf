"""``WrappedOptimizer``: the shell shared by optimizers that wrap another torch optimizer.

OptimLP, SWALP, DataParallel, CocktailSGD and the decentralized optimizers (DPSGD, DeTAG,
Moniqua) each take a ``torch.optim.Optimizer`` and return one (the design's "a wrapper
returns the same kind of thing it takes"): LR schedulers, other wrappers and step hooks see
the wrapped optimizer's ``param_groups``, ``state`` and ``defaults``.  Subclasses add their
own ``step``.

Checkpoints: ``state_dict()`` is the wrapped optimizer's state dict plus one entry, named
by the subclass's ``_state_key``, holding what ``_extra_state()`` returns (tensors, numbers,
strings, lists and dicts only, so ``torch.load(weights_only=True)`` reads it back);
``load_state_dict`` takes that entry out, loads the rest into the wrapped optimizer and
hands the entry to ``_load_extra_state``.  Nested wrappers nest naturally (each adds its
own key to the dict of the one inside); the same wrapper class twice in one stack is
refused at ``state_dict`` time, as the two entries would collide.
"""
from __future__ import annotations

from collections import OrderedDict

import torch


class WrappedOptimizer(torch.optim.Optimizer):
    """Delegate param_groups, state, defaults, zero_grad and add_param_group to ``optimizer``.

    Subclasses set ``_state_key`` (the name of their entry in the state dict) and override
    ``_extra_state`` / ``_load_extra_state``; ``_extra_optional = True`` lets
    ``load_state_dict`` accept a state dict without the entry (``_load_extra_state`` is then
    not called), e.g. one saved by the bare wrapped optimizer.
    """

    _state_key: str = "wrapped"
    _extra_optional: bool = False

    def __init__(self, optimizer: torch.optim.Optimizer):
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"Invalid optimizer: {optimizer!r} (expected a torch.optim.Optimizer)")
        self.optimizer = optimizer
        self._init_hooks()

    @property
    def param_groups(self):
        return self.optimizer.param_groups

    @property
    def state(self):
        return self.optimizer.state

    @property
    def defaults(self):
        return self.optimizer.defaults

    def _params(self) -> list[torch.Tensor]:
        return [p for group in self.optimizer.param_groups for p in group["params"]]

    def _init_hooks(self) -> None:
        # torch.optim.Optimizer.__init__ is not called (it would copy the groups): set up
        # what it would, so step pre/post hooks and profiling work as for any optimizer.
        for name in ("step_pre", "step_post", "state_dict_pre", "state_dict_post",
                     "load_state_dict_pre", "load_state_dict_post"):
            self.__dict__.setdefault(f"_optimizer_{name}_hooks", OrderedDict())
        self._patch_step_function()

    @staticmethod
    def _evaluate(closure):
        """The loss of ``closure`` (None without one), with gradients on inside a no-grad step."""
        if closure is None:
            return None
        with torch.enable_grad():
            return closure()

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def add_param_group(self, param_group: dict) -> None:
        self.optimizer.add_param_group(param_group)

    # -- checkpoints -----------------------------------------------------------------------------
    def _extra_state(self) -> dict:
        """What this wrapper adds to the wrapped optimizer's state dict (weights_only-loadable)."""
        return {}

    def _load_extra_state(self, extra: dict) -> None:
        """Restore what ``_extra_state`` returned (called after the wrapped optimizer is loaded)."""

    def state_dict(self) -> dict:
        """The wrapped optimizer's state dict plus ``{self._state_key: self._extra_state()}``."""
        sd = self.optimizer.state_dict()
        if self._state_key in sd:
            raise RuntimeError(f"{type(self).__name__}: the wrapped optimizer's state dict already has a "
                               f"{self._state_key!r} entry (the same wrapper twice in one stack)")
        sd[self._state_key] = self._extra_state()
        return sd

    def load_state_dict(self, state_dict: dict) -> None:
        state_dict = dict(state_dict)
        extra = state_dict.pop(self._state_key, None)
        if extra is None and not self._extra_optional:
            raise ValueError(f"Invalid state_dict: keys {sorted(map(str, state_dict))} (not saved by "
                             f"{type(self).__name__}: no {self._state_key!r} entry)")
        self.optimizer.load_state_dict(state_dict)
        if extra is not None:
            self._load_extra_state(extra)

    def __getstate__(self) -> dict:
        return dict(self.__dict__)

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._init_hooks()
