"""``python -m vaekit``."""

import sys

from vaekit.cli.main import main

sys.exit(main())
