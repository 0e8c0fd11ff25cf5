"""``python -m anyloss``: the ``anyloss`` command (``conformance``, ``info``)."""

import sys

from anyloss.conformance.cli import main

sys.exit(main())
