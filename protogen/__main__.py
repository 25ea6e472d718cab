"""``python -m protogen``: the command line (see :mod:`protogen.cli`)."""
import sys

from .cli import main

sys.exit(main())
