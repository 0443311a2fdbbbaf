"""``python -m relaxtorch.jobs.gibbs``: the same as ``relaxtorch gibbs``."""
import sys

from ...cli import main

sys.exit(main(["gibbs", *sys.argv[1:]]))
