"""The run directory: where each artifact lives (layout), reading and writing it safely (io), and RunDir itself."""
from __future__ import annotations

import importlib
from typing import Any


def __getattr__(name: str) -> Any:  # RunDir without importing pandas for `from replearn.rundir import layout`
    if name in {"RunDir", "first_difference"}:
        return getattr(importlib.import_module("replearn.rundir.directory"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
