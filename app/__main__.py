"""``python -m app`` is the ``polypscope`` command."""

import sys

from app.cli import main

sys.exit(main())
