"""`python -m shared ...`: the project's command line (see `python -m shared --help`)."""

import sys

from shared.cli.main import main

sys.exit(main())
