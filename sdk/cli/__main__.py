"""``python -m clipsam.cli``: the ``clipsam`` command line."""

import sys

from . import main

sys.exit(main())
