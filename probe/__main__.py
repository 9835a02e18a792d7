"""``python -m probe`` runs the command line."""

import sys

from probe.cli import main

sys.exit(main())
