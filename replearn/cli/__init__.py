"""The replearn command: one module per command; ``main`` is the entry point."""
from __future__ import annotations

import importlib
from typing import Any

from replearn.cli.main import main

__all__ = ["main"]


def __getattr__(name: str) -> Any:  # the old module's names, imported only when asked for
    if name in {"build_parser", "foreign_error"}:
        return getattr(importlib.import_module("replearn.cli.main"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
