"""``python -m relaxtorch.jobs.tradeoff``: the same as ``relaxtorch tradeoff``."""
import sys

from ...cli import main

sys.exit(main(["tradeoff", *sys.argv[1:]]))
