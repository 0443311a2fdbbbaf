"""``python -m relaxtorch.jobs.hogwild``: the same as ``relaxtorch hogwild``."""
import sys

from ...cli import main

sys.exit(main(["hogwild", *sys.argv[1:]]))
