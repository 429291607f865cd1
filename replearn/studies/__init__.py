"""Studies across runs: sweeps (local and SLURM backends) and the cross-run comparison report."""
