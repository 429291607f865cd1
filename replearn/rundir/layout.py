"""Every file and folder name inside a run directory or a sweep directory, spelled once.

Each name is a path relative to the run (or sweep) directory; ``docs/run-directory.md`` describes what each
holds. Code that writes or reads a run asks this module for the name, so that a renamed file is renamed
everywhere, and a reader of a run (the report, ``replearn compare``, ``replearn similarity``) can find each
file without knowing who wrote it.
"""
from __future__ import annotations

# files at the top of a run directory
MARKER = "replearn-run.json"     # what makes a folder a replearn run (format version, name, config hash)
CONFIG = "config.yaml"           # the resolved config the run was started with
STATUS = "status.json"           # running / complete / failed / interrupted / diverged, and why
DATASET = "dataset.json"         # split sizes, shapes, classes and pixel statistics of the data used
ENVIRONMENT = "environment.json"  # versions, machine, threads
MODELS = "models.json"           # every model (regime or baseline) with its label and colour
REPORT = "report.html"

# folders of a run directory
METRICS = "metrics"              # tables (CSV) and JSON summaries
ARTIFACTS = "artifacts"          # arrays (npz): predictions, reconstructions, features for the report
CHECKPOINTS = "checkpoints"      # weights (pt) and training state
FIGURES = "figures"              # every report figure as png/svg/pdf
TABLES = "tables"                # every main report table as csv/tex
TENSORBOARD = "tensorboard"

# a sweep directory, and the reports across runs
SWEEP_MANIFEST = "sweep.json"
COMPARE_REPORT = "compare.html"
SIMILARITY_REPORT = "similarity.html"

# the image-folder decode cache (inside data.cache_dir, not a run)
CACHE_META = "meta.json"


def metrics_table(name: str) -> str:
    """metrics/<name>.csv: one of the run's tables (probes, cka, models, …)."""
    return f"{METRICS}/{name}.csv"


def metrics_json(name: str) -> str:
    """metrics/<name>.json: a JSON summary (summary, comparison)."""
    return f"{METRICS}/{name}.json"


SUMMARY = metrics_json("summary")
COMPARISON = metrics_json("comparison")


def train_metrics(model: str, seed: int) -> str:
    """metrics/train_<model>_seed<seed>.csv: one row per epoch of a regime's training."""
    return f"{METRICS}/train_{model}_seed{seed}.csv"


def grad_init(model: str, seed: int) -> str:
    """metrics/grad_init_<model>_seed<seed>.csv: gradient norms by layer at initialisation."""
    return f"{METRICS}/grad_init_{model}_seed{seed}.csv"


def seed_artifact(name: str, seed: int) -> str:
    """artifacts/<name>_seed<seed>.npz: an array file one analysis saves per seed (predictions, …)."""
    return f"{ARTIFACTS}/{name}_seed{seed}.npz"


def seed_artifact_pattern(name: str) -> str:
    """The glob, relative to artifacts/, of every seed's file of one artifact."""
    return f"{name}_seed*.npz"


def predictions(seed: int) -> str:
    """artifacts/predictions_seed<seed>.npz: each model's test predictions, for the paired statistics."""
    return seed_artifact("predictions", seed)


def model_artifact(kind: str, model: str, seed: int) -> str:
    """artifacts/<kind>_<model>_seed<seed>.npz: a trained model's test outputs or reconstructions."""
    return f"{ARTIFACTS}/{kind}_{model}_seed{seed}.npz"


def checkpoint(model: str, seed: int) -> str:
    """checkpoints/<model>_seed<seed>.pt: a trained encoder and head, with what rebuilds them."""
    return f"{CHECKPOINTS}/{model}_seed{seed}.pt"


def train_state(model: str, seed: int) -> str:
    """checkpoints/<model>_seed<seed>.state.pt: the optimiser and loop state, for resuming mid-training."""
    return f"{CHECKPOINTS}/{model}_seed{seed}.state.pt"


def initial_weights(seed: int) -> str:
    """checkpoints/init_seed<seed>.pt: the initial encoder every regime of a seed starts from."""
    return f"{CHECKPOINTS}/init_seed{seed}.pt"


def tensorboard_run(model: str, seed: int) -> str:
    """tensorboard/<model>_seed<seed>: one TensorBoard run per trained model."""
    return f"{TENSORBOARD}/{model}_seed{seed}"


def figure(name: str, fmt: str) -> str:
    """figures/<name>.<fmt>."""
    return f"{FIGURES}/{name}.{fmt}"


def table(name: str, fmt: str) -> str:
    """tables/<name>.<fmt>."""
    return f"{TABLES}/{name}.{fmt}"
