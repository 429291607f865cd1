"""Evaluate a saved encoder: rebuild it from its checkpoint and probe its layers on a dataset.

The checkpoint carries its config, so the same split, pooling and probe grid as the run are used and
the run's probe accuracy is reproduced. Separate from training, like DINO's eval_linear.py.
"""
from __future__ import annotations

import re
import time
from pathlib import Path

import pandas as pd
import torch

from .artifacts import check_output_file, load_checkpoint, load_state_dict_checked, write_json, write_output
from .config import ModelConfig, apply_overrides, build_section, config_from_dict
from .data import load_dataset
from .errors import CheckpointError, ConfigError, DataError
from .features import extract_splits
from .encoders import Encoder, encoder_from_spec, encoder_spec
from .probes import knn_probe, linear_probe


def encoder_from_checkpoint(payload: dict) -> Encoder:
    """Rebuild the encoder a checkpoint was saved from (its registered name and arguments, or for older
    checkpoints the model section of its config) and load its weights (shapes checked)."""
    spec = payload.get("encoder_spec")
    try:
        if not isinstance(spec, dict):
            model_cfg = build_section(ModelConfig, "model", dict(payload["config"]["model"]))
            spec = encoder_spec(model_cfg, tuple(payload["in_shape"]))
        if not isinstance(spec.get("name"), str) or not isinstance(spec.get("kwargs"), dict):
            raise TypeError("encoder_spec needs a name and kwargs")
        encoder = encoder_from_spec(spec)
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as exc:
        raise CheckpointError(f"checkpoint lacks a usable model description ({type(exc).__name__}: "
                              f"{str(exc)[:100]})", "use a checkpoint written by `replearn run`") from None
    load_state_dict_checked(encoder, payload["encoder"], "checkpoint encoder")
    return encoder


def checked_metadata(payload: dict, path: Path) -> dict:
    """The checkpoint's config as a dict of sections, after checking the types of the fields probing reads."""
    def bad(field: str, what: str) -> CheckpointError:
        return CheckpointError(f"checkpoint '{path}' has a malformed '{field}' field ({what})",
                               "use a checkpoint written by `replearn run`; this one was altered or is foreign")

    raw = payload.get("config") or {}
    if not isinstance(raw, dict):
        raise bad("config", f"a {type(raw).__name__}, not a mapping")
    for section in ("data", "model", "analysis"):
        if not isinstance(raw.get(section, {}), dict):
            raise bad(f"config.{section}", f"a {type(raw[section]).__name__}, not a mapping")
    state = payload.get("encoder")
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise bad("encoder", "not a mapping of parameter names to tensors")
    shape = payload.get("in_shape")
    if shape is not None and not (isinstance(shape, (list, tuple)) and len(shape) == 3
                                  and all(isinstance(d, int) and not isinstance(d, bool) and 0 < d < 1 << 16 for d in shape)):
        raise bad("in_shape", f"{str(shape)[:40]}, not three positive sizes C, H, W")
    spec = payload.get("encoder_spec")
    if spec is not None and not (isinstance(spec, dict) and isinstance(spec.get("name"), str)
                                 and isinstance(spec.get("kwargs"), dict)):
        raise bad("encoder_spec", "not a mapping with a name and kwargs")
    return dict(raw)


def default_result_name(checkpoint: Path, dataset: str, layers: list[str] | None, with_knn: bool) -> str:
    """``<checkpoint>.probe-<dataset>[-<layers>][-knn].json``: one file per distinct evaluation, so that probing
    other layers or adding kNN does not overwrite an earlier result."""
    parts = [dataset, *(layers or []), *(["knn"] if with_knn else [])]
    return f"{checkpoint.stem}.probe-" + "-".join(re.sub(r"[^A-Za-z0-9_.]+", "_", p) for p in parts) + ".json"


def probe_checkpoint(checkpoint: str | Path, dataset: str, layers: list[str] | None, overrides: list[str],
                     json_path: str | Path | None = None, with_knn: bool = False) -> tuple[str, Path]:
    """Linear (and optionally kNN) probe test accuracy of each requested layer; returns (table text, JSON path)."""
    checkpoint = Path(checkpoint)
    out = Path(json_path) if json_path else checkpoint.with_name(default_result_name(checkpoint, dataset, layers, with_knn))
    check_output_file(out, "--json")
    payload = load_checkpoint(checkpoint)
    raw = checked_metadata(payload, checkpoint)
    trained_on = raw.get("data", {}).get("name")
    data_section = dict(raw.get("data", {}))
    if dataset != trained_on:
        data_section = {k: v for k, v in data_section.items() if k in ("val_fraction", "split_seed")}
    data_section["name"] = dataset
    raw = {"name": raw.get("name", "probe"), "data": data_section, "model": raw.get("model", {}),
           "analysis": raw.get("analysis", {})}
    for text in overrides:
        if not text.split("=", 1)[0].strip().startswith(("data.", "analysis.")):
            raise ConfigError(f"`replearn probe` only accepts data.* and analysis.* overrides, got '{text}'",
                              "the model comes from the checkpoint; change data or probe settings only")
    cfg = config_from_dict(apply_overrides(raw, overrides))
    encoder = encoder_from_checkpoint(payload)
    data = load_dataset(cfg.data)
    if tuple(data.image_shape) != tuple(encoder.in_shape):
        raise DataError(f"the checkpoint expects {'×'.join(map(str, encoder.in_shape))} images but {dataset} has "
                        f"{'×'.join(map(str, data.image_shape))}",
                        f"probe on a dataset with {'×'.join(map(str, encoder.in_shape))} images "
                        f"(it was trained on {trained_on})")
    wanted = layers or encoder.layer_names
    unknown = [l for l in wanted if l not in encoder.layer_names]
    if unknown:
        raise ConfigError(f"unknown layer '{unknown[0]}'", f"choose from {', '.join(encoder.layer_names)}")
    splits = {"train": data.train_x, "val": data.val_x, "test": data.test_x}
    labels = {"train": data.train_y, "val": data.val_y, "test": data.test_y}
    features = extract_splits(encoder, splits, cfg.analysis.max_stage_features, layers=wanted)
    rows = []
    for layer in wanted:
        f = features[layer]
        train, val, test = ((f[s], labels[s]) for s in ("train", "val", "test"))
        started = time.perf_counter()
        lin = linear_probe(train, val, test, cfg.analysis.probe_l2_grid, cfg.analysis.probe_max_iter,
                           cfg.analysis.probe_tol)
        row = {"layer": layer, "dim": int(f["train"].shape[1]), "linear_test_accuracy": round(lin.test_accuracy, 4),
               "linear_val_accuracy": round(lin.val_accuracy, 4), "l2": lin.chosen,
               "seconds": round(time.perf_counter() - started, 2)}
        if with_knn:
            knn = knn_probe(train, val, test, cfg.analysis.knn_k_grid, cfg.analysis.knn_temperature)
            row.update({"knn_test_accuracy": round(knn.test_accuracy, 4), "k": int(knn.chosen)})
        rows.append(row)
    table = pd.DataFrame(rows)
    write_output(out, "--json", lambda: write_json(out, {"checkpoint": str(checkpoint), "regime": payload.get("regime"), "seed": payload.get("seed"),
                     "dataset": data.summary(), "results": rows}))
    header = (f"{payload.get('regime', '?')} encoder (seed {payload.get('seed', '?')}) from {checkpoint}, "
              f"probed on {dataset}: {len(data.train_y)} train / {len(data.val_y)} val / {len(data.test_y)} test")
    return header + "\n" + table.to_string(index=False), out
