"""``python -m probe`` runs the command line."""

import sys

from probe.cli import console_main

sys.exit(console_main())
