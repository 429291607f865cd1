"""``python -m replearn`` is the ``replearn`` command (so that ``torchrun -m replearn run CONFIG`` works)."""
import sys

from replearn.cli.main import main

sys.exit(main())
