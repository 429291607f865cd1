"""replearn: train one encoder under several objectives from the same initial weights and measure side by
side what each learned: probes at every layer, similarity and dimension by depth, projections, statistics
over seeds, and an HTML report. ``replearn.Experiment`` runs a comparison from Python; the analysis
functions (``replearn.metrics.probes``, ``replearn.metrics.similarity``, …) work on plain feature arrays.
"""
import os as _os
import sys as _sys

from replearn.version import __version__  # noqa: E402,F401

# Waiting OpenMP threads sleep instead of spinning (see replearn/runtime/threads.py): this must be set before
# torch, NumPy or scikit-learn start their thread pools, so only when none of them is loaded yet, and
# never over a value the user chose.
if not {"torch", "numpy", "sklearn"} & set(_sys.modules) and _os.environ.get("REPLEARN_THREADS") != "library":
    _os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


from ._moved import install as _install_moved  # noqa: E402

_install_moved()


def __getattr__(name: str):  # ``from replearn import Experiment`` without importing torch for ``replearn --help``
    if name == "Experiment":
        from replearn.experiment.experiment import Experiment

        return Experiment
    raise AttributeError(f"module 'replearn' has no attribute {name!r}")
