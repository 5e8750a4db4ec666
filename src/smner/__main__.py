"""``python -m smner``: the ``smner`` command."""

import sys

from smner.cli import main

sys.exit(main())
