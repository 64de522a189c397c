"""``python -m tilefuse`` is the ``tilefuse`` command."""

import sys

from .cli import main

sys.exit(main())
