"""One comparison experiment: the Experiment stages, plug-in resolution and the checks made before a run directory exists."""
from __future__ import annotations

import importlib
from typing import Any


def __getattr__(name: str) -> Any:  # the old module's names, imported only when asked for
    if name in {"Experiment"}:
        return getattr(importlib.import_module("replearn.experiment.experiment"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
