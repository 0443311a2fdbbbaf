"""``WrappedOptimizer``: the shell shared by optimizers that wrap another torch optimizer.

OptimLP, DataParallel and CocktailSGD each take a ``torch.optim.Optimizer`` and return
one (the design's "a wrapper returns the same kind of thing it takes"): LR schedulers,
SWALP and step hooks see the wrapped optimizer's ``param_groups``, ``state`` and
``defaults``.  Subclasses add their own ``step`` and ``state_dict``.
"""
from __future__ import annotations

from collections import OrderedDict

import torch


class WrappedOptimizer(torch.optim.Optimizer):
    """Delegate param_groups, state, defaults and zero_grad to ``optimizer``."""

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

    def __getstate__(self) -> dict:
        return dict(self.__dict__)

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._init_hooks()
