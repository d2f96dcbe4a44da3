"""`python -m neuralab` runs the command line."""

import sys

from neuralab.cli.main import main

sys.exit(main())
