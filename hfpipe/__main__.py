"""`python -m hfpipe ...` and `accelerate launch -m hfpipe ...`."""

import sys

from .cli import main

sys.exit(main())
