"""Progress messages on stderr, one line each, silenced with ``set_quiet``."""
from __future__ import annotations

import sys
from typing import Any
import time

_quiet = False
_start = time.perf_counter()


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = quiet


def log(message: str) -> None:
    if not _quiet:
        print(f"[{time.perf_counter() - _start:6.1f}s] {message}", file=sys.stderr, flush=True)


def progress_bar(total: int, desc: str, enabled: bool = True) -> Any:
    """A tqdm bar on stderr that disappears when done (disabled when quiet or not wanted)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False, disable=not enabled or _quiet or None)
