"""Progress messages on stderr, one line each, written above the progress bars; silenced with ``set_quiet``."""
from __future__ import annotations

import sys
import time
from typing import Any

_quiet = False
_start = time.perf_counter()


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = quiet


def log(message: str) -> None:
    """One timestamped line on stderr, written above any progress bar (never into it)."""
    if not _quiet:
        from tqdm.auto import tqdm

        tqdm.write(f"[{time.perf_counter() - _start:6.1f}s] {message}", file=sys.stderr)


def progress_bar(total: int, desc: str, enabled: bool = True) -> Any:
    """A tqdm bar on stderr that disappears when done (disabled when quiet or not wanted)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False, disable=not enabled or _quiet or None)
