"""replearn: what does a conv encoder learn from labels vs. from rebuilding its input?

Train one encoder supervised and as an autoencoder, then compare the two with probes, projections,
similarity and dimension by depth. The analysis functions work on plain feature arrays.
"""
__version__ = "0.1.0"
