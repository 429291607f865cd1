"""Looking inside the trained models: one explanation target per model (``targets``), and plain functions
over models and arrays for attributions and their sanity checks, faithfulness, invariance by depth,
robustness to corruptions, unit selectivity and feature visualisation. The analyses in
``replearn.analyses`` call these; each works without the trainer."""
