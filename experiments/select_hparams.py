"""Choose regime hyperparameters on the validation split, never on test.

Trains each setting of a grid from the same initial encoder as the experiment's own runs (seed 0, the
experiment's budget) and records, after the last epoch, the validation criteria: the regime's own
validation loss and metrics (``val_recon_mse`` is always the error on clean inputs; the denoising and
VAE objectives' own errors are ``val_denoising_mse`` and ``val_sampled_recon_mse``), RankMe of the
validation latents (Garrido et al. 2023) — none of them uses labels — and the validation accuracy of the
per-epoch latent linear probe (which uses validation labels, and is marked as such wherever it chose a
value). It then names the best setting by ``--criterion``:

    label-free (default): RankMe of the validation latents (higher is better). The regime's own validation
                          loss is not comparable across settings that change the loss itself (more noise
                          or a larger β always costs reconstruction), so it is recorded but not used;
    probe:                the validation latent probe — uses labels, so say so when you report it.

    python experiments/select_hparams.py experiments/objectives.yaml --grid denoising.noise_std=0,0.25,0.5 \\
        --grid denoising.mask_fraction=0,0.25,0.5 --out selection.csv [--set train.epochs=4] [--device cuda]

Every combination of the values given for one regime is trained (the other regimes are not).
"""
from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from replearn import Experiment  # noqa: E402
from replearn.config.sections import apply_overrides, config_from_dict, load_yaml  # noqa: E402
from replearn.metrics.dimension import rankme  # noqa: E402
from replearn.encoders.extract import extract_features  # noqa: E402


def parse_grid(items: list[str]) -> tuple[str, dict[str, list[str]]]:
    regime, grid = None, {}
    for item in items:
        key, _, values = item.partition("=")
        name, _, option = key.partition(".")
        if regime not in (None, name) or not option or not values:
            raise SystemExit(f"--grid takes regime.option=v1,v2,… for one regime, got {item!r}")
        regime = name
        grid[option] = values.split(",")
    if regime is None:
        raise SystemExit("give at least one --grid regime.option=v1,v2,…")
    return regime, grid


PROBE = "val_latent_probe_accuracy (uses val labels)"


def choose(frame: pd.DataFrame, criterion: str) -> tuple[str, int]:
    """The criterion column and the index of the best row under it."""
    if criterion == "probe":
        return PROBE + " — uses labels", int(frame[PROBE].idxmax())
    return "val_rankme (label-free, higher is better)", int(frame["val_rankme"].idxmax())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("--grid", action="append", default=[], metavar="REGIME.OPTION=V1,V2")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--device", default=None, help="override train.device")
    parser.add_argument("--out", required=True, help="CSV of the results (rows added, columns aligned by name)")
    parser.add_argument("--criterion", choices=("label-free", "probe"), default="label-free",
                        help="how the best setting is named (default: label-free; probe uses validation labels)")
    args = parser.parse_args()
    regime_name, grid = parse_grid(args.grid)
    raw = load_yaml(args.config)
    raw["regimes"] = {k: v for k, v in (raw.get("regimes") or {}).items() if k == regime_name}

    def load_config(_path: str, overrides: list[str]):  # the experiment with only this regime and its options
        return config_from_dict(apply_overrides(raw, overrides))

    fixed = args.overrides + [f"train.regimes=[{regime_name}]"] + ([f"train.device={args.device}"] if args.device else [])
    data, rows = None, []
    for values in itertools.product(*grid.values()):
        setting = dict(zip(grid, values))
        cfg = load_config(args.config, fixed + [f"regimes.{regime_name}.{k}={v}" for k, v in setting.items()])
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            experiment = Experiment(cfg, out=Path(tmp) / "run", progress=False)
            experiment.data = data  # loaded (and checked) once, by the first setting's experiment
            experiment.prepare()
            data = experiment.data
            encoder = experiment.train(regime_name, 0)  # from seed 0's initial encoder, as the experiment's runs
            history = pd.read_csv(experiment.run_dir.train_metrics(regime_name, 0)).to_dict("records")
        last = history[-1]
        latents = extract_features(encoder, data.val_x, layers=["latent"], device=experiment.device)["latent"]
        row = {"regime": regime_name, **setting, "epochs": len(history),
               **{k: v for k, v in last.items() if k.startswith("val_") and k != "val_latent_probe_accuracy"},
               "val_rankme": rankme(latents),
               PROBE: last.get("val_latent_probe_accuracy"),
               "seconds": round(time.perf_counter() - started, 1), "device": str(experiment.device)}
        rows.append(row)
        print(", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)
    frame = pd.DataFrame(rows)
    column, best = choose(frame, args.criterion)
    print(f"best by {column}: " + ", ".join(f"{k}={frame.loc[best, k]}" for k in grid))
    append_aligned(Path(args.out), frame)


def append_aligned(out: Path, frame: pd.DataFrame) -> None:
    """Add ``frame``'s rows to the CSV ``out``, aligning columns by name: grids of different regimes have
    different option columns, and every value must stay under its own header. A column new to the file is
    placed where ``frame`` has it (``merged_columns``: a regime's options beside the others'); a value a row
    does not have stays empty. The file is replaced in one step, never left half written."""
    if out.exists():
        existing = pd.read_csv(out)
        columns = merged_columns(list(existing.columns), list(frame.columns))
        frame = pd.concat([existing, frame], ignore_index=True, sort=False)[columns]
    partial = out.with_name(out.name + ".partial")
    frame.to_csv(partial, index=False)
    os.replace(partial, out)


def merged_columns(existing: list[str], new: list[str]) -> list[str]:
    """``existing`` with each column of ``new`` it lacks inserted before the column that follows it in ``new``
    (so a new option goes beside the other options, before ``epochs``), or at the end."""
    order = list(existing)
    for i, column in enumerate(new):
        if column not in order:
            following = next((c for c in new[i + 1:] if c in order), None)
            order.insert(order.index(following) if following is not None else len(order), column)
    return order


if __name__ == "__main__":
    main()
