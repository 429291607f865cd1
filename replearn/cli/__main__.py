"""``python -m replearn.cli`` is the ``replearn`` command."""
import sys

from replearn.cli.main import main

sys.exit(main())
