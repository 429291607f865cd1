"""The HTML report, rendered only from a run directory's saved artifacts."""
from __future__ import annotations

import importlib
from typing import Any


def __getattr__(name: str) -> Any:  # the old module's names, imported only when asked for
    if name in {"render_report", "build_context"}:
        return getattr(importlib.import_module("replearn.report.html"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
