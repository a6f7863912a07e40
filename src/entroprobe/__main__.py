"""``python -m entroprobe`` (and ``torchrun -m entroprobe``) runs the command line."""

import sys

from entroprobe.cli import main

sys.exit(main())
