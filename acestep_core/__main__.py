"""`python -m acestep_core …` runs the `acestep` command line."""

import sys

from acestep_core.cli import main

sys.exit(main())
