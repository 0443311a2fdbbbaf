"""Preset number formats: ``rt.formats.FP8_E4M3`` and friends (see numbers/presets.py)."""
from .numbers.presets import *  # noqa: F401,F403
from .numbers.presets import __all__  # noqa: F401
