"""Progress messages on stderr, one line each, silenced with ``set_quiet``."""
from __future__ import annotations

import sys
import time

_quiet = False
_start = time.perf_counter()


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = quiet


def log(message: str) -> None:
    if not _quiet:
        print(f"[{time.perf_counter() - _start:6.1f}s] {message}", file=sys.stderr, flush=True)
