"""`python -m neuralab` runs the command line."""

import sys

from neuralab.cli import main

sys.exit(main())
