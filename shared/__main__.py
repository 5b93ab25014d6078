"""`python -m shared ...`: the project's command line (see `python -m shared --help`)."""

import sys

from shared.cli import main

sys.exit(main())
