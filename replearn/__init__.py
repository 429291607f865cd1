"""replearn: what does a conv encoder learn from labels vs. from rebuilding its input?

Train one encoder supervised and as an autoencoder, then compare the two with probes, projections,
similarity and dimension by depth. The analysis functions work on plain feature arrays.
"""
import os as _os
import sys as _sys

__version__ = "0.1.0"

# Waiting OpenMP threads sleep instead of spinning (see replearn/parallel.py): this must be set before
# torch, NumPy or scikit-learn start their thread pools, so only when none of them is loaded yet, and
# never over a value the user chose.
if not {"torch", "numpy", "sklearn"} & set(_sys.modules) and _os.environ.get("REPLEARN_THREADS") != "library":
    _os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
