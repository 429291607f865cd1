"""Evaluate a saved encoder: rebuild it from its checkpoint and probe its layers on a dataset.

The checkpoint carries its config, so the same split, pooling and probe grid as the run are used and
the run's probe accuracy is reproduced. Separate from training, like DINO's eval_linear.py.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from .artifacts import (check_output_file, load_checkpoint, load_state_dict_checked, save_npz, write_json,
                        write_output)
from .config import Config, ModelConfig, apply_overrides, build_section, config_from_dict
from .data import Dataset, analysis_view, data_keys, load_dataset
from .errors import CheckpointError, ConfigError, DataError
from .features import extract_splits
from .encoders import Encoder, build_module, encoder_from_spec, encoder_spec
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


@dataclass
class LoadedModel:
    """A model ready to evaluate: its encoder (layers named), the dataset and settings, and what it is."""

    encoder: Encoder
    cfg: Config
    data: Dataset
    layers: list[str]
    about: dict[str, Any]
    title: str


def _checked_overrides(overrides: list[str], command: str) -> list[str]:
    for text in overrides:
        if not text.split("=", 1)[0].strip().startswith(("data.", "analysis.")):
            raise ConfigError(f"`replearn {command}` only accepts data.* and analysis.* overrides, got '{text}'",
                              "the model comes from its file; change data or probe settings only")
    return overrides


def _replearn_model(checkpoint: Path, dataset: str, layers: list[str] | None, overrides: list[str],
                    command: str) -> LoadedModel:
    """A replearn checkpoint with the split, pooling and probe settings of the run that wrote it."""
    payload = load_checkpoint(checkpoint)
    raw = checked_metadata(payload, checkpoint)
    trained_on = raw.get("data", {}).get("name")
    data_section = dict(raw.get("data", {}))
    if dataset != trained_on:
        data_section = {k: v for k, v in data_section.items() if k in ("val_fraction", "split_seed")}
    else:  # an older replearn wrote every dataset's keys; keep those this dataset declares
        data_section = {k: v for k, v in data_section.items() if k in data_keys(dataset)}
    data_section["name"] = dataset
    raw = {"name": raw.get("name", "probe"), "data": data_section, "model": raw.get("model", {}),
           "analysis": raw.get("analysis", {})}
    cfg = config_from_dict(apply_overrides(raw, _checked_overrides(overrides, command)))
    encoder = encoder_from_checkpoint(payload)
    data = load_dataset(cfg.data)
    if tuple(data.image_shape) != tuple(encoder.in_shape):
        raise DataError(f"the checkpoint expects {'×'.join(map(str, encoder.in_shape))} images but {dataset} has "
                        f"{'×'.join(map(str, data.image_shape))}",
                        f"use a dataset with {'×'.join(map(str, encoder.in_shape))} images (it was trained on {trained_on})")
    wanted = layers or encoder.layer_names
    unknown = [l for l in wanted if l not in encoder.layer_names]
    if unknown:
        raise ConfigError(f"unknown layer '{unknown[0]}'", f"choose from {', '.join(encoder.layer_names)}")
    return LoadedModel(encoder, cfg, data, list(wanted),
                       {"checkpoint": str(checkpoint), "regime": payload.get("regime"), "seed": payload.get("seed")},
                       f"{payload.get('regime', '?')} encoder (seed {payload.get('seed', '?')}) from {checkpoint}")


def _foreign_model(path: Path, dataset: str, layers: list[str] | None, overrides: list[str], model: str | None,
                   kwargs: dict, command: str) -> LoadedModel:
    """A model replearn did not train, read at ``layers`` (module paths; 'latent' is its output)."""
    from .encoders.tapped import TappedModule

    cfg = config_from_dict(apply_overrides({"name": "probe", "data": {"name": dataset}},
                                           _checked_overrides(overrides, command)))
    module = load_foreign_module(path, model, kwargs)
    data = load_dataset(cfg.data)
    encoder = TappedModule(module, data.image_shape, [l for l in (layers or []) if l != "latent"])
    wanted = list(layers) if layers else encoder.layer_names  # without --layer: the output ('latent')
    return LoadedModel(encoder, cfg, data, wanted,
                       {"model_file": str(path), "model": model or "torchscript", "model_kwargs": kwargs},
                       f"{model or 'TorchScript'} from {path}")


def load_for_evaluation(path: str | Path, dataset: str, layers: list[str] | None, overrides: list[str],
                        model: str | None = None, kwargs: dict | None = None, command: str = "probe") -> LoadedModel:
    """Any model file: a replearn checkpoint, a state_dict of ``model``, or a TorchScript file."""
    path = Path(path)
    if model or is_torchscript(path):
        loaded = _foreign_model(path, dataset, layers, overrides, model, kwargs or {}, command)
    else:
        loaded = _replearn_model(path, dataset, layers, overrides, command)
    loaded.data = analysis_view(loaded.data, loaded.cfg.analysis.max_images_per_split, loaded.cfg.data.split_seed)
    return loaded


def probe_model(path: str | Path, dataset: str, layers: list[str] | None, overrides: list[str],
                json_path: str | Path | None = None, with_knn: bool = False, model: str | None = None,
                kwargs: dict | None = None) -> tuple[str, Path]:
    """Linear (and optionally kNN) probe test accuracy of each requested layer, with the penalty chosen on
    validation; writes JSON with the results and the whole protocol. Returns (table text, JSON path)."""
    path = Path(path)
    out = Path(json_path) if json_path else path.with_name(default_result_name(path, dataset, layers, with_knn))
    check_output_file(out, "--json")
    loaded = load_for_evaluation(path, dataset, layers, overrides, model, kwargs)
    cfg, data = loaded.cfg, loaded.data
    rows = _probe_rows(loaded.encoder, data, cfg, loaded.layers, with_knn)
    protocol = {"splits": {"train": len(data.train_y), "val": len(data.val_y), "test": len(data.test_y)},
                "split_seed": cfg.data.split_seed, "val_fraction": cfg.data.val_fraction,
                "pixel_normalisation": {"mean": list(data.mean), "std": list(data.std), "per": "channel",
                                        "fitted_on": "train"},
                "pooling": f"feature maps average-pooled to at most {cfg.analysis.max_stage_features} features; "
                           "a 4-D model output averaged over space",
                "batch_norm": "eval mode (running statistics)",
                "features": "standardised per feature on train", "l2_grid": cfg.analysis.probe_l2_grid,
                "l2_chosen_on": "validation", "l2_selection": cfg.analysis.probe_selection,
                "tol": cfg.analysis.probe_tol, "max_iter": cfg.analysis.probe_max_iter,
                "knn": {"k_grid": cfg.analysis.knn_k_grid, "temperature": cfg.analysis.knn_temperature} if with_knn else None}
    write_output(out, "--json", lambda: write_json(out, {**loaded.about, "layers": loaded.layers,
                                                         "dataset": data.summary(), "protocol": protocol,
                                                         "results": rows}))
    header = (f"{loaded.title}, probed on {dataset}: {len(data.train_y)} train / {len(data.val_y)} val / "
              f"{len(data.test_y)} test")
    return header + "\n" + pd.DataFrame(rows).to_string(index=False), out


def export_features(path: str | Path, dataset: str, layers: list[str] | None, overrides: list[str],
                    out: str | Path, model: str | None = None, kwargs: dict | None = None) -> Path:
    """Write the model's features at ``layers`` for every split to an .npz (``<layer>.<split>`` arrays, N × D,
    pooled as for probing; ``labels.<split>``; ``layers``), for scikit-learn, rsatoolbox, netrep and others."""
    out = Path(out)
    check_output_file(out, "--out")
    loaded = load_for_evaluation(path, dataset, layers, overrides, model, kwargs, command="features")
    data = loaded.data
    splits = {"train": data.train_x, "val": data.val_x, "test": data.test_x}
    features = extract_splits(loaded.encoder, splits, loaded.cfg.analysis.max_stage_features, layers=loaded.layers)
    arrays = {f"{layer}.{split}": f.numpy() for layer, by_split in features.items() for split, f in by_split.items()}
    arrays.update({f"labels.{split}": getattr(data, f"{split}_y").numpy() for split in splits})
    arrays["layers"] = np.array(loaded.layers)
    return write_output(out, "--out", lambda: save_npz(out, **arrays))


def is_torchscript(path: Path) -> bool:
    """Whether ``path`` is a TorchScript archive (torch.jit.save) rather than a torch.save file."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as zf:
            return any(n.endswith("/constants.pkl") or "/code/" in n for n in zf.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def load_foreign_module(path: Path, model: str | None, kwargs: dict) -> torch.nn.Module:
    """A model replearn did not train: a TorchScript file, or ``model`` (an import path to an nn.Module class
    or factory, called with ``kwargs``) with the ``state_dict`` in ``path`` loaded (weights only, checked)."""
    import pickle

    if not path.is_file():
        raise CheckpointError(f"model file '{path}' does not exist", "pass a state_dict (.pt) or TorchScript file")
    if is_torchscript(path):
        try:
            return torch.jit.load(str(path), map_location="cpu")
        except (RuntimeError, OSError, ValueError) as exc:
            raise CheckpointError(f"'{path}' is not a loadable TorchScript file ({type(exc).__name__})",
                                  "save it with torch.jit.save, or pass a state_dict with --model") from None
    if not model:
        raise ConfigError(f"'{path}' is not a replearn checkpoint or a TorchScript file, so replearn needs the model "
                          "that its weights belong to", "pass --model package.module:Factory (and --model-kwargs)")
    module = build_module(model, kwargs, "--model", "--model-kwargs")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(f"'{path}' was refused: it holds objects other than tensors", "save model.state_dict()") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(f"'{path}' is not a readable PyTorch file ({type(exc).__name__})",
                              "save it with torch.save(model.state_dict(), path)") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"'{path}' does not hold a state_dict (names → tensors)", "save model.state_dict()")
    load_state_dict_checked(module, state, f"state_dict '{path}'")
    return module


def _probe_rows(encoder: Encoder, data: Dataset, cfg: Config, layers: list[str], with_knn: bool) -> list[dict]:
    """Linear (and kNN) probe results of each layer, penalty chosen on validation."""
    splits = {"train": data.train_x, "val": data.val_x, "test": data.test_x}
    labels = {"train": data.train_y, "val": data.val_y, "test": data.test_y}
    features = extract_splits(encoder, splits, cfg.analysis.max_stage_features, layers=layers)
    rows = []
    for layer in layers:
        f = features[layer]
        train, val, test = ((f[s], labels[s]) for s in ("train", "val", "test"))
        started = time.perf_counter()
        lin = linear_probe(train, val, test, cfg.analysis.probe_l2_grid, cfg.analysis.probe_max_iter,
                           cfg.analysis.probe_tol, selection=cfg.analysis.probe_selection)
        row = {"layer": layer, "dim": int(f["train"].shape[1]), "linear_test_accuracy": round(lin.test_accuracy, 4),
               "linear_val_accuracy": round(lin.val_accuracy, 4), "l2": lin.chosen,
               "seconds": round(time.perf_counter() - started, 2)}
        if with_knn:
            knn = knn_probe(train, val, test, cfg.analysis.knn_k_grid, cfg.analysis.knn_temperature)
            row.update({"knn_test_accuracy": round(knn.test_accuracy, 4), "k": int(knn.chosen)})
        rows.append(row)
    return rows
