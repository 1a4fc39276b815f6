"""``python -m mgd_gui``: start MGD Studio."""

import sys

from mgd_gui.app import main

sys.exit(main())
