"""``python -m anyloss.conformance``: the same as ``anyloss conformance``."""

import sys

from anyloss.conformance.cli import main

sys.exit(main(["conformance", *sys.argv[1:]]))
