"""``python -m relaxtorch.jobs.sample``: the same as ``relaxtorch sample``."""
import sys

from ...cli import main

sys.exit(main(["sample", *sys.argv[1:]]))
