"""Modules that moved in 0.2 (issue 27's layout) still import under their old names for one release, with a
DeprecationWarning naming the new place: ``import replearn.probes`` gives ``replearn.metrics.probes``."""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings
from types import ModuleType

MOVED = {f"replearn.{old}": f"replearn.{new}" for old, new in {
    "options": "config.options", "registry": "config.registry", "parallel": "runtime.threads",
    "distributed": "runtime.distributed", "seeding": "runtime.seeding", "log": "runtime.log",
    "artifacts": "rundir.io", "arrays": "metrics.arrays", "probes": "metrics.probes",
    "neighbours": "metrics.neighbours", "similarity": "metrics.similarity", "dimension": "metrics.dimension",
    "structure": "metrics.clustering", "projection": "metrics.umap", "stats": "metrics.stats",
    "features": "encoders.extract", "model_files": "encoders.model_files", "evaluate": "encoders.saved",
    "plots": "analyses.plots", "plugins": "experiment.plugins", "preflight": "experiment.preflight",
    "sweep": "studies.sweep", "sweep_backends": "studies.backends", "compare": "studies.compare",
    "compare_runs": "studies.runs", "compare_plots": "studies.plots", "launch": "cli.launch",
}.items()}


class MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds a moved module's old name and hands out the module at its new place (the same object)."""

    def __init__(self) -> None:
        self._real_specs: dict[str, importlib.machinery.ModuleSpec] = {}

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> importlib.machinery.ModuleSpec | None:
        return importlib.util.spec_from_loader(fullname, self) if fullname in MOVED else None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        warnings.warn(f"{spec.name} moved to {MOVED[spec.name]}; the old name stops working in replearn 0.3",
                      DeprecationWarning, stacklevel=3)
        module = importlib.import_module(MOVED[spec.name])
        self._real_specs[module.__name__] = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        module.__spec__ = self._real_specs[module.__name__]  # the import system gave it the alias's spec


def install() -> None:
    """Put the finder first on ``sys.meta_path``, once (before any finder that might still see an old file)."""
    if not any(isinstance(f, MovedModuleFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, MovedModuleFinder())
