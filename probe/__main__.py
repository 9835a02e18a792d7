"""``python -m probe`` runs the command line."""

import sys

from probe._cli import main

sys.exit(main())
