"""Pure functions on feature arrays: probes, neighbours, similarity, dimension, clustering, UMAP, statistics. No training, no plotting, no run directory."""
