"""One comparison experiment, end to end: config → data → models → training → features → analyses → report.

Each seed trains every regime from the same initial encoder, extracts features once per model, and
hands them to the analyses; everything lands in the run directory as CSV/JSON/NPZ, written atomically.
The report is rendered from those files alone. ``resume=True`` continues an interrupted run: finished
regimes are loaded, an interrupted one restarts from its last completed step, analyses are redone.
"""
from __future__ import annotations

import copy
import datetime as dt
import math
import os
import platform
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from . import __version__, parallel
from .analyses import ANALYSES, RunContext, SeedContext
from .analyses.base import Features, ModelInfo, baseline_models, write_models
from .analyses.summary import closing_summary, summarize
from .artifacts import (RUN_MARKER, check_run_dir, load_checkpoint, load_state_dict_checked, mark_run_dir,
                        read_json, save_checkpoint, save_npz, write_csv, write_json, atomic_write_text)
from .config import Config, dump_yaml, load_config
from .data import Dataset, analysis_view, load_dataset, stratified_subset
from .errors import ConfigError, ReplearnError, RunDirError, TrainingDiverged, TrainingInterrupted
from .encoders import Encoder, build_encoder, encoder_spec
from .features import eval_mode, extract_splits, pca_baseline, pixel_features
from .log import RunClock, log, start_clock
from .regimes import DataInfo, Regime
from .train import Stopper, eval_batch_size, evaluate, resolve_device, train_regime, training_step_flops


def default_run_dir(cfg: Config, base: str | Path = "reports") -> Path:
    """reports/<name>-<timestamp>, with a numeric suffix if that already exists."""
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    candidate = Path(base) / f"{cfg.name}-{stamp}"
    suffix = 2
    while candidate.exists():
        candidate = Path(base) / f"{cfg.name}-{stamp}-{suffix}"
        suffix += 1
    return candidate


def check_run_dir_free(run_dir: Path, force: bool) -> None:
    """Raise unless ``run_dir`` may be created: absent or empty, or (with ``force``) a replearn run."""
    too_long = next((part for part in run_dir.parts if len(os.fsencode(part)) > 255), None)
    if too_long is not None:
        raise RunDirError(f"output path component '{too_long[:40]}…' is {len(os.fsencode(too_long))} bytes, longer than "
                          "file systems allow (255)", "choose a shorter --out directory or run name")
    if force and run_dir.is_symlink():
        raise RunDirError(f"output path '{run_dir}' is a symbolic link, so --force will not replace it",
                          f"pass the directory it points to ({os.path.realpath(run_dir)}) or another --out")
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"output path '{run_dir}' exists and is a file", "choose another --out directory")
    if run_dir.exists() and any(run_dir.iterdir()):
        if not force:
            raise RunDirError(f"output directory '{run_dir}' already exists",
                              "choose another --out, resume it with --resume, or pass --force to replace it")
        if not (run_dir / RUN_MARKER).is_file():
            raise RunDirError(f"output directory '{run_dir}' is not empty and is not a replearn run, so --force "
                              "will not delete it", "choose another --out directory")
    parent = next((p for p in [run_dir, *run_dir.parents] if p.exists()), Path("."))
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise RunDirError(f"cannot create output directory '{run_dir}' ('{parent}' is not a writable directory)",
                          "choose a writable --out directory")


def prepare_run_dir(run_dir: Path, force: bool) -> None:
    """Create a fresh run directory; never overwrite an existing one unless ``force`` and it is replearn's."""
    check_run_dir_free(run_dir, force)
    if run_dir.exists() and any(run_dir.iterdir()):
        shutil.rmtree(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise RunDirError(f"cannot write to output directory '{run_dir}' ({exc.strerror or type(exc).__name__})",
                          "choose a writable --out directory") from None


def environment_record(cfg: Config, device: torch.device) -> dict[str, Any]:
    import sklearn

    return {
        "replearn": __version__, "python": platform.python_version(), "torch": torch.__version__,
        "numpy": np.__version__, "scikit-learn": sklearn.__version__, "pandas": pd.__version__,
        "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(), "threads": parallel.record(), "device": str(device),
        "cuda": torch.cuda.get_device_name(0) if device.type == "cuda" else None,
        "seeds": cfg.train.seeds, "command": " ".join(sys.argv),
    }


def set_status(run_dir: Path, state: str, message: str = "", **extra: Any) -> None:
    write_json(run_dir / "status.json", {"state": state, "message": message,
                                         "updated": dt.datetime.now().isoformat(timespec="seconds"), **extra})


def checkpoint_payload(regime: Regime, seed: int, encoder: Encoder, head: torch.nn.Module, cfg: Config,
                       data: Dataset, history: list[dict]) -> dict[str, Any]:
    """A final checkpoint: enough to rebuild the encoder and reproduce its features without the run."""
    return {"format": "replearn-checkpoint", "kind": "model", "regime": regime.name, "regime_spec": regime.spec,
            "seed": seed, "encoder": encoder.state_dict(), "encoder_spec": encoder_spec(cfg.model, data.image_shape),
            "head": head.state_dict(), "config": cfg.to_dict(), "in_shape": list(encoder.in_shape),
            "num_classes": data.num_classes, "dataset": data.summary(), "epochs_trained": len(history),
            "replearn": __version__}


def paths(run_dir: Path, regime: str, seed: int) -> dict[str, Path]:
    return {"final": run_dir / "checkpoints" / f"{regime}_seed{seed}.pt",
            "state": run_dir / "checkpoints" / f"{regime}_seed{seed}.state.pt",
            "metrics": run_dir / "metrics" / f"train_{regime}_seed{seed}.csv",
            "init": run_dir / "checkpoints" / f"init_seed{seed}.pt"}


def load_checked_dataset(cfg: Config) -> Dataset:
    """Load the config's dataset and check that the model, the regimes and the analyses fit it, before
    anything is written."""
    device = resolve_device(cfg.train.device)
    data = load_dataset(cfg.data)
    check_data_fits(cfg, data)
    preflight(cfg, data, device)
    return data


def preflight(cfg: Config, data: Dataset, device: torch.device) -> None:
    """One training step of every regime on throwaway copies, so that a regime that fails or whose loss is
    not finite is reported in one line before a run directory exists (the RNG is left untouched)."""
    n = min(len(data.train_x), cfg.train.batch_size, 64)
    info = DataInfo(data.image_shape, data.num_classes)
    with torch.random.fork_rng(devices=[]):
        encoder0 = build_encoder(cfg.model, data.image_shape, 0)
        for regime in cfg.regime_objects():
            encoder = copy.deepcopy(encoder0).to(device)
            where = f"regime '{regime.spec}'"
            try:
                head = regime.build_head(encoder, info).to(device)
                x = data.train_x[:n].to(device).contiguous(memory_format=torch.channels_last)
                y = data.train_y[:n].to(device) if regime.needs_labels else None
                loss, stats = regime.loss(encoder, head, x, y, torch.Generator(device=device).manual_seed(0))
                finite = bool(torch.isfinite(loss).all()) if isinstance(loss, torch.Tensor) else False
                if finite:
                    loss.backward()
            except ReplearnError:
                raise
            except Exception as exc:  # a plug-in may fail in any way: report it in one line
                detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
                raise ConfigError(f"{where} failed on a first training batch ({type(exc).__name__}"
                                  f"{': ' + detail if detail else ''})",
                                  "fix the regime's build_head/loss, or remove it from train.regimes") from None
            if not isinstance(loss, torch.Tensor) or loss.ndim != 0:
                raise ConfigError(f"{where} returned a loss that is not a scalar tensor", "return loss.mean() or a sum")
            if not finite:
                raise ConfigError(f"{where} gives a non-finite loss ({float(loss.detach())}) on the first training batch",
                                  "check its loss for a division by zero or log of 0, or lower its weights")


def model_infos(regimes: list[Regime]) -> list[ModelInfo]:
    """The analysed models: the baselines, the untrained encoder, then every regime."""
    return baseline_models() + [ModelInfo(r.name, r.label or r.name, r.color, "regime", r.needs_labels,
                                          type(r).reconstruct is not Regime.reconstruct) for r in regimes]


def run_experiment(cfg: Config, run_dir: Path, *, resume: bool = False, progress: bool = True,
                   render: bool = True, data: Dataset | None = None) -> Path:
    """Run the whole comparison into ``run_dir`` (created beforehand) and return the report's path."""
    started = time.perf_counter()
    device = resolve_device(cfg.train.device)
    if data is None:
        data = load_checked_dataset(cfg)
    regimes = cfg.regime_objects()
    log(f"dataset {data.name}: {len(data.train_y)} train / {len(data.val_y)} val / {len(data.test_y)} test, "
        f"images {'×'.join(map(str, data.image_shape))}, device {device}; regimes {', '.join(r.name for r in regimes)}")
    try:
        if resume:
            for stale in run_dir.rglob(".*.tmp"):
                stale.unlink(missing_ok=True)  # temporaries of writes cut short by a crash; never artifacts
        else:
            atomic_write_text(run_dir / "config.yaml", dump_yaml(cfg))
            write_json(run_dir / "environment.json", environment_record(cfg, device))
            mark_run_dir(run_dir, {"name": cfg.name, "created": dt.datetime.now().isoformat(timespec="seconds"),
                                   "config": cfg.to_dict()})
        write_json(run_dir / "dataset.json", data.summary())
        run = RunContext(cfg, run_dir, model_infos(regimes), progress)
        write_models(run_dir, run.models)
        set_status(run_dir, "running")
    except OSError as exc:
        raise _write_failure(run_dir, exc, resume) from None

    analyses = [cls() for _, cls in ANALYSES.items()]
    analysed = analysis_view(data, cfg.analysis.max_images_per_split, cfg.data.split_seed)
    if analysed is not data:
        log(f"analyses use a stratified subset: {len(analysed.train_y)} train / {len(analysed.val_y)} val / "
            f"{len(analysed.test_y)} test images (analysis.max_images_per_split)")
    snapshot_images = data.test_x[:cfg.analysis.reconstructions] if cfg.analysis.reconstructions else None
    results: dict[str, list] = {}
    model_rows: list[dict[str, Any]] = []
    baselines: dict[str, Any] = {}
    steps_per_epoch = math.ceil(len(data.train_y) / cfg.train.batch_size)
    clock = RunClock(len(cfg.train.seeds))
    for regime in regimes:
        steps = steps_per_epoch * cfg.epochs_for(regime)
        clock.plan(regime.name, steps * len(cfg.train.seeds), step_flops(regime, cfg, data, device))
        for seed in cfg.train.seeds:
            if paths(run_dir, regime.name, seed)["final"].exists():
                clock.skip(regime.name, steps)
    start_clock(clock)
    stopper = Stopper()
    try:
        with stopper:
            extraction_seconds = 0.0
            for seed in cfg.train.seeds:
                init = _initial_encoder(cfg, data, seed, run_dir)
                encoders: dict[str, Encoder] = {"random": init}
                for regime in regimes:
                    clock.begin(regime.name)
                    encoders[regime.name], row = _train_or_load(regime, seed, init, data, cfg, device, run_dir,
                                                                stopper, snapshot_images, progress)
                    model_rows.append(row)
                extraction_started = time.perf_counter()
                features = extract_all(encoders, analysed, cfg, device, baselines)
                extraction_seconds += time.perf_counter() - extraction_started
                fresh = [m for m in features if m not in baselines.get("analysed", ())]
                baselines["analysed"] = ["pixels", "pca"]
                points = stratified_subset(analysed.test_y.numpy(), cfg.analysis.analysis_points, cfg.data.split_seed)
                ctx = SeedContext(run, seed, analysed, features, encoders, fresh, points)
                analysis_started = time.perf_counter()
                for analysis in analyses:
                    one_started = time.perf_counter()
                    for key, frame in analysis.compute(ctx).items():
                        ctx.tables[key] = frame
                        results.setdefault(key, []).append(frame)
                    if time.perf_counter() - one_started > 0.5:
                        log(f"seed {seed}: {analysis.name} done ({time.perf_counter() - one_started:.1f}s)")
                clock.analysed(time.perf_counter() - extraction_started)
                log(f"seed {seed}: analyses done in {time.perf_counter() - analysis_started:.1f}s{clock.suffix()}")
                del features, ctx
            for analysis in analyses:
                for key, frame in analysis.finish(run).items():
                    results.setdefault(key, []).append(frame)
            _write_tables(run_dir, results, model_rows)
            _record_thread_choices(run_dir)
            wall = round(time.perf_counter() - started, 1)
            summary = summarize(run_dir, cfg, wall)
            summary.update(feature_extraction_seconds=round(extraction_seconds, 1), state="complete")
            write_json(run_dir / "metrics" / "summary.json", summary)
            # complete means every artifact, the report included, exists: the report is rendered as complete first
            complete = {"state": "complete", "message": "", "wall_seconds": wall}
            report = _render(run_dir, complete) if render else run_dir / "report.html"
            set_status(run_dir, "complete", wall_seconds=wall)
    except KeyboardInterrupt:  # a signal outside the training loop: those phases are redone on resume
        stop = TrainingInterrupted(str(run_dir), stopper.requested or "SIGINT")
        _record_failure(run_dir, "interrupted", f"stopped by {stop.signal_name}; resume to finish")
        raise stop from None
    except TrainingInterrupted as stop:
        _record_failure(run_dir, "interrupted", f"stopped by {stop.signal_name}; state saved in {stop.run_dir}")
        raise
    except TrainingDiverged as exc:
        set_status(run_dir, "diverged", exc.one_line())
        _write_tables(run_dir, results, model_rows)
        if render:
            _render(run_dir)
        raise
    except OSError as exc:  # disk full, a file removed or made read-only under the run
        raise _write_failure(run_dir, exc, resume) from None
    finally:
        start_clock(None)  # never left behind for a later run in the same process
    for line in closing_summary(run_dir, time.perf_counter() - started, report):
        log(line)
    return report


def _write_failure(run_dir: Path, exc: OSError, resume: bool) -> RunDirError:
    """The one-line error for a failed write; a run that had not yet saved anything is removed (it could not
    be resumed), any other is left resumable."""
    where = f" '{exc.filename}'" if getattr(exc, "filename", None) else ""
    problem = f"could not write the run's files{where} ({exc.strerror or type(exc).__name__})"
    if not resume and not (run_dir / RUN_MARKER).is_file():
        shutil.rmtree(run_dir, ignore_errors=True)
        return RunDirError(problem + "; nothing was kept", "free disk space (or fix permissions), then run again")
    error = RunDirError(problem, "free disk space (or fix permissions), then resume with: "
                                 f"replearn run --resume {shlex.quote(str(run_dir))}")
    _record_failure(run_dir, "failed", error.one_line())
    return error


def _record_failure(run_dir: Path, state: str, message: str) -> None:
    """Set the run's status after a stop or failure, if the disk still allows it."""
    try:
        set_status(run_dir, state, message)
    except OSError:
        pass


def extract_all(encoders: dict[str, Encoder], data: Dataset, cfg: Config, device: torch.device,
                baselines: dict[str, Any]) -> dict[str, Features]:
    """Features of every model for every split, each extracted once: the seed-independent baselines (raw
    pixels, PCA of pixels) once per run, the encoders once per seed."""
    splits = {"train": data.train_x, "val": data.val_x, "test": data.test_x}
    if "pixels" not in baselines:
        log("extracting baseline features: raw pixels, PCA of pixels")
        baselines["pixels"] = pixel_features(splits)
        baselines["pca"] = pca_baseline(baselines["pixels"]["input"], cfg.model.latent_dim)
    log(f"extracting features of {', '.join(encoders)}")
    features = {"pixels": baselines["pixels"], "pca": baselines["pca"]}
    for name, encoder in encoders.items():
        features[name] = extract_splits(encoder, splits, cfg.analysis.max_stage_features, device)
    return features


def _record_thread_choices(run_dir: Path) -> None:
    """Add the threads each phase used to environment.json (the setting itself was recorded at the start)."""
    path = run_dir / "environment.json"
    if path.is_file():
        env = read_json(path)
        threads = env.get("threads") if isinstance(env.get("threads"), dict) else {}
        env["threads"] = {**threads, "phases": {**threads.get("phases", {}), **parallel.decisions()}}
        write_json(path, env)


def recorded_thread_setting(run_dir: Path) -> int | None:
    """The --threads setting a run was started with (None for automatic), so that a resume repeats it."""
    path = run_dir / "environment.json"
    try:
        setting = read_json(path).get("threads", {}).get("setting")
    except (OSError, ValueError, AttributeError):
        return None
    return setting if isinstance(setting, int) and not isinstance(setting, bool) and setting >= 1 else None


def check_data_fits(cfg: Config, data: Dataset) -> None:
    """Fail before training if the analyses ask for more than the data (the images they analyse) hold."""
    analysed = analysis_view(data, cfg.analysis.max_images_per_split, cfg.data.split_seed)
    counts = np.bincount(analysed.train_y.numpy(), minlength=data.num_classes)
    present = counts[counts > 0]
    need = max(cfg.analysis.label_counts)
    if present.min() < need:
        rarest = data.class_names[int(np.flatnonzero(counts == present.min())[0])]
        limit = (f" of the {len(analysed.train_y)} analysed (analysis.max_images_per_split)"
                 if analysed is not data else "")
        raise ConfigError(f"analysis.label_counts asks for {need} labels per class but class '{rarest}' has only "
                          f"{int(present.min())} training images{limit}",
                          f"set analysis.label_counts to values of at most {int(present.min())}, or use more data"
                          + (" (or raise analysis.max_images_per_split)" if limit else ""))
    if len(data.test_y) < MIN_TEST_IMAGES:
        fix = (f"set data.test_subset to at least {MIN_TEST_IMAGES} (or 0 for the whole test split)"
               if cfg.data.test_subset else f"give the dataset at least {MIN_TEST_IMAGES} test images")
        raise ConfigError(f"the test split has {len(data.test_y)} images; the analyses (CKA, clustering, "
                          f"neighbourhoods) need at least {MIN_TEST_IMAGES}", fix)
    build_encoder(cfg.model, data.image_shape, 0)


MIN_TEST_IMAGES = 10


def _render(run_dir: Path, status: dict[str, Any] | None = None) -> Path:
    from .report import render_report

    return render_report(run_dir, status=status)


def _write_tables(run_dir: Path, results: dict[str, list], model_rows: list[dict[str, Any]]) -> None:
    for key, frames in results.items():
        frames = [f for f in frames if f is not None and len(f)]
        if frames:
            write_csv(run_dir / "metrics" / f"{key}.csv", pd.concat(frames, ignore_index=True))
    if model_rows:
        write_csv(run_dir / "metrics" / "models.csv", pd.DataFrame(model_rows))


def _initial_encoder(cfg: Config, data: Dataset, seed: int, run_dir: Path) -> Encoder:
    """The seed's initial encoder, saved once so that every regime (and a resumed run) starts from it."""
    encoder = build_encoder(cfg.model, data.image_shape, seed)
    init_path = paths(run_dir, "init", seed)["init"]
    if init_path.exists():
        load_state_dict_checked(encoder, load_checkpoint(init_path)["encoder"], f"initial weights {init_path}")
    else:
        save_checkpoint(init_path, {"format": "replearn-checkpoint", "kind": "init", "seed": seed,
                                    "encoder": encoder.state_dict(), "encoder_spec": encoder_spec(cfg.model, data.image_shape),
                                    "config": cfg.to_dict(), "in_shape": list(encoder.in_shape),
                                    "num_classes": data.num_classes, "dataset": data.summary(), "regime": "random",
                                    "replearn": __version__})
    return encoder


def step_flops(regime: Regime, cfg: Config, data: Dataset, device: torch.device) -> float:
    """FLOPs of one training step of the regime, from a throwaway encoder; used only to weigh the run's ETA."""
    encoder = build_encoder(cfg.model, data.image_shape, 0).to(device)
    head = build_head(regime, encoder, data, 0).to(device)
    return training_step_flops(regime, encoder, head, data.train_x[:2].to(device), data.train_y[:2].to(device),
                               cfg.train.batch_size)


def build_head(regime: Regime, encoder: Encoder, data: Dataset, seed: int) -> torch.nn.Module:
    """The regime's head, seeded (the same seed always gives the same head)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1_000_003)
        return regime.build_head(encoder, DataInfo(data.image_shape, data.num_classes))


def _train_or_load(regime: Regime, seed: int, init: Encoder, data: Dataset, cfg: Config, device: torch.device,
                   run_dir: Path, stopper: Stopper, snapshot_images: torch.Tensor | None, progress: bool
                   ) -> tuple[Encoder, dict[str, Any]]:
    p = paths(run_dir, regime.name, seed)
    encoder = copy.deepcopy(init)
    head = build_head(regime, encoder, data, seed)
    if p["final"].exists():
        ckpt = load_checkpoint(p["final"])
        load_state_dict_checked(encoder, ckpt["encoder"], f"checkpoint {p['final']}")
        load_state_dict_checked(head, ckpt["head"], f"checkpoint {p['final']}")
        encoder.to(device), head.to(device)
        log(f"{regime.name} seed {seed}: loaded finished checkpoint {p['final']}")
        return encoder, read_json(p["final"].with_suffix(".json"))
    if p["state"].exists():
        log(f"{regime.name} seed {seed}: resuming from {p['state']}")
    outcome = train_regime(regime, encoder, head, data, cfg, seed, device, p["state"], p["metrics"], stopper,
                           snapshot_images, progress)
    test = evaluate(regime, encoder, head, data.test_x, data.test_y, device, eval_batch_size(regime, cfg))
    row: dict[str, Any] = {"model": regime.name, "seed": seed, "epochs": len(outcome.history),
                           **{f"test_{k}": v for k, v in test.items()}}
    with torch.no_grad(), eval_mode(encoder, head):
        scalars, arrays = regime.test_report(encoder, head, data.test_x, 1000)
        if outcome.snapshots is not None and len(outcome.history) == cfg.epochs_for(regime):
            recon = torch.from_numpy(outcome.snapshots[-1])  # the last epoch's snapshot is the final model's
        elif snapshot_images is not None:
            recon = regime.reconstruct(encoder, head, snapshot_images.to(device).contiguous(memory_format=torch.channels_last))
        else:
            recon = None
    row.update({f"test_{k}": v for k, v in scalars.items()})
    if outcome.history:
        row["train_seconds"] = float(sum(h["train_seconds"] for h in outcome.history))
    log(f"{regime.name} seed {seed}: test " + ", ".join(f"{k} {v:.4f}" for k, v in test.items()))
    if arrays:
        save_npz(run_dir / "artifacts" / f"test_{regime.name}_seed{seed}.npz", **arrays)
    if recon is not None:
        save_npz(run_dir / "artifacts" / f"reconstructions_{regime.name}_seed{seed}.npz",
                 inputs=data.to_unit_range(snapshot_images).numpy(),
                 final=data.to_unit_range(recon.float().cpu()).numpy(),
                 over_epochs=(data.to_unit_range(torch.from_numpy(outcome.snapshots)).numpy()
                              if outcome.snapshots is not None else np.zeros((0,), np.float32)))
    save_checkpoint(p["final"], checkpoint_payload(regime, seed, encoder, head, cfg, data, outcome.history))
    write_json(p["final"].with_suffix(".json"), row)
    p["state"].unlink(missing_ok=True)
    return encoder, row


def load_run_config(run_dir: Path) -> Config:
    check_run_dir(run_dir, need="resume")
    return load_config(run_dir / "config.yaml")


def prepare_resume(run_dir: Path) -> Config:
    """Validate a run directory for --resume and return its saved config; refuse a config that differs from
    the one the run was started with, and a run that is already complete. Nothing is written."""
    cfg = load_run_config(run_dir)
    started_with = read_json(run_dir / RUN_MARKER).get("config")
    if isinstance(started_with, dict):
        changed = first_difference(started_with, cfg.to_dict())
        if changed is not None:
            key, before, now = changed
            raise RunDirError(f"{run_dir / 'config.yaml'} was changed after the run started: {key} was {before}, "
                              f"now {now}; its checkpoints and splits were made with the original",
                              f"set {key} back to {before} to resume, or start a new run with the new config")
    status = _read_status(run_dir)
    if status.get("state") == "complete":
        quoted = shlex.quote(str(run_dir))
        if (run_dir / "report.html").is_file():
            raise RunDirError(f"run '{run_dir}' is already complete", f"re-render it with `replearn report {quoted}`")
        raise RunDirError(f"run '{run_dir}' is complete but its report.html is missing",
                          f"write it with `replearn report {quoted}`")
    return cfg


def _read_status(run_dir: Path) -> dict[str, Any]:
    try:
        status = read_json(run_dir / "status.json")
    except (OSError, ValueError):
        return {}
    return status if isinstance(status, dict) else {}


def first_difference(before: Any, now: Any, prefix: str = "") -> tuple[str, str, str] | None:
    """The first key (dotted) whose value differs between two nested config dicts, with both values."""
    if isinstance(before, dict) and isinstance(now, dict):
        for key in list(before) + [k for k in now if k not in before]:
            found = first_difference(before.get(key), now.get(key), f"{prefix}{key}.")
            if found is not None:
                return found
        return None
    if before != now:
        return prefix.rstrip("."), _short(before), _short(now)
    return None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:60] + "…"


def _same_value(a: Any, b: Any) -> bool:
    """Equal, with floats (also inside lists) compared to a relative 1e-6: statistics recomputed on resume."""
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same_value(x, y) for x, y in zip(a, b))
    return a == b


def check_resumed_data(run_dir: Path, data: Dataset) -> None:
    """Refuse to resume on data other than the run's: same split sizes, shapes, classes and pixel statistics."""
    try:
        saved = read_json(run_dir / "dataset.json")
    except (OSError, ValueError):
        return
    if not isinstance(saved, dict):
        return
    now = data.summary()
    for key in ("train", "val", "test", "image_shape", "num_classes", "class_names", "pixel_mean", "pixel_std"):
        if key not in saved:
            continue
        a, b = saved[key], now[key]
        if not _same_value(a, b):
            raise RunDirError(f"the dataset differs from the one run '{run_dir}' started with ({key}: {_short(a)} then, "
                              f"{_short(b)} now)", "restore the original data files to resume, or start a new run")


def fail_cleanly(run_dir: Path, exc: ReplearnError) -> None:
    """Record a user-input failure in a run directory that has already been started."""
    if (run_dir / RUN_MARKER).is_file() and not isinstance(exc, TrainingDiverged):
        _record_failure(run_dir, "failed", exc.one_line())
