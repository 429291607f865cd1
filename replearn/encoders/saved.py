"""Evaluate a saved encoder: rebuild it from its checkpoint and probe its layers on a dataset.

The checkpoint carries its config, so the same split, pooling and probe grid as the run are used and
the run's probe accuracy is reproduced. Separate from training, like DINO's eval_linear.py.
"""
from __future__ import annotations

import dataclasses
import re
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from replearn.rundir.io import check_output_file, load_state_dict_checked, save_npz, write_json, write_output
from replearn.config.sections import Config, DataConfig, ModelConfig, apply_overrides, build_section, config_from_dict
from replearn.data import Dataset, analysis_view, dataset_class, load_dataset
from replearn.errors import CheckpointError, ConfigError, DataError, ReplearnError
from replearn.encoders.extract import extract_splits
from replearn.encoders import Encoder, build_module, encoder_from_spec, encoder_spec
from replearn.encoders.tapped import ExportedGraph, TappedModule
from replearn.encoders.model_files import (CODE_FORMATS, TORCHSCRIPT, load_code_file, model_file_kind, read_weights,
                          refuse_code_file)
from replearn.metrics.probes import knn_probe, linear_probe
from replearn.data.streaming import image_fingerprints
from replearn.config.registry import is_import_path

CHECKPOINT_FORMAT = "replearn-checkpoint"


@dataclass(frozen=True)
class ModelSource:
    """A model file and how the user asked for it to be read: ``model``, an import path, builds the module a
    state_dict belongs to (or confirms the import path a checkpoint's encoder was saved under), with
    ``kwargs``; ``trust_code`` allows TorchScript and torch.export files, whose loading runs their code."""

    path: Path
    model: str | None = None
    kwargs: dict = field(default_factory=dict)
    trust_code: bool = False


def recorded_encoder_name(payload: dict) -> Any:
    """The encoder name (registered, or an import path) a checkpoint says it was saved from."""
    spec = payload.get("encoder_spec")
    if isinstance(spec, dict):
        return spec.get("name")
    model = (payload.get("config") or {}).get("model") or {}
    return model.get("name", "conv") if isinstance(model, dict) else None


def confirm_encoder_name(payload: dict, path: Path, confirmed: str | None) -> None:
    """A checkpoint may name its encoder by import path, but importing runs that module's code: only a path
    the user gives with ``--model`` is imported, never one the file chooses."""
    name = recorded_encoder_name(payload)
    if not isinstance(name, str):
        raise CheckpointError(f"checkpoint '{path}' has a malformed encoder name ({str(name)[:40]})",
                              "use a checkpoint written by `replearn run`; this one was altered or is foreign")
    if is_import_path(name) and confirmed != name:
        raise CheckpointError(f"checkpoint '{path}' names its encoder by import path '{name[:120]}', and importing "
                              "it runs that module's code; replearn imports only modules you name",
                              f"if you trust that module, pass --model {name[:120]}")
    if confirmed and confirmed != name:
        raise ConfigError(f"--model {confirmed[:120]} was given, but checkpoint '{path}' holds the encoder "
                          f"'{name[:120]}'", "drop --model: a replearn checkpoint records its own encoder")


def _checkpoint_spec(payload: dict) -> dict:
    """The encoder's registered name or import path and arguments, as the checkpoint records them (older
    checkpoints: derived from their config's model section)."""
    spec = payload.get("encoder_spec")
    try:
        if not isinstance(spec, dict):
            model_cfg = build_section(ModelConfig, "model", dict(payload["config"]["model"]))
            spec = encoder_spec(model_cfg, tuple(payload["in_shape"]))
        if not isinstance(spec.get("name"), str) or not isinstance(spec.get("kwargs"), dict):
            raise TypeError("encoder_spec needs a name and kwargs")
    except ReplearnError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise _unusable_description(exc) from None
    return spec


def _unusable_description(exc: Exception) -> CheckpointError:
    return CheckpointError(f"checkpoint lacks a usable model description ({type(exc).__name__}: {str(exc)[:100]})",
                           "use a checkpoint written by `replearn run`")


def _check_shapes_without_memory(spec: dict, state: dict) -> None:
    """Build the encoder on the meta device (no memory) and compare its tensors' shapes with the checkpoint's,
    so that recorded arguments asking for enormous layers are refused before anything is allocated (the
    checkpoint's own tensors are bounded by ``check_archive``). An encoder that cannot be built on the meta
    device is left to the real build's checks."""
    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            shell = encoder_from_spec(spec)
    except (ConfigError, CheckpointError):
        raise
    except Exception:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # loading into meta tensors is a no-op torch warns about
        load_state_dict_checked(shell, state, "checkpoint encoder")


def encoder_from_checkpoint(payload: dict, spec: dict | None = None) -> Encoder:
    """Rebuild the encoder a checkpoint was saved from (``spec``: its registered name or import path and
    arguments, confirmed by the caller) and load its weights, every shape checked first without memory."""
    spec = _checkpoint_spec(payload) if spec is None else spec
    _check_shapes_without_memory(spec, payload["encoder"])
    try:
        encoder = encoder_from_spec(spec)
    except ReplearnError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as exc:
        raise _unusable_description(exc) from None
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


def checkpoint_data_settings(section: dict, dataset: str, trained_on: Any) -> dict:
    """The data settings of the run that wrote a checkpoint that probing reuses: for the dataset it was trained
    on, its numbers, switches and choices (split, subsets, layout) and the root its files were read from;
    for another dataset, only the split. Every other string is left out, so nothing is ever written where a
    file says (a folder dataset's data.cache_dir, say): that comes from the caller's settings."""
    if dataset != trained_on:
        section = {k: v for k, v in section.items() if k in ("val_fraction", "split_seed")}
    declared = {f.name: f for f in (*dataclasses.fields(DataConfig), *dataclasses.fields(dataset_class(dataset).Options))}
    kept = {}
    for key, value in section.items():
        choices = declared[key].metadata.get("choices") if key in declared else None
        if key in declared and key not in ("name", "plugin_options") and (
                isinstance(value, (bool, int, float)) or (isinstance(value, str) and choices and value in choices)
                or (key == "root" and isinstance(value, str))):
            kept[key] = value
    return kept


def _replearn_model(source: ModelSource, payload: dict, dataset: str, layers: list[str] | None,
                    overrides: list[str], command: str) -> LoadedModel:
    """A replearn checkpoint with the split, pooling and probe settings of the run that wrote it."""
    checkpoint = source.path
    if source.kwargs:
        raise ConfigError("--model-kwargs was given for a replearn checkpoint, which records its encoder's arguments",
                          "drop --model-kwargs")
    raw = checked_metadata(payload, checkpoint)
    confirm_encoder_name(payload, checkpoint, source.model)
    trained_on = raw.get("data", {}).get("name")
    data_section = {**checkpoint_data_settings(dict(raw.get("data", {})), dataset, trained_on), "name": dataset}
    raw = {"name": raw.get("name", "probe"), "data": data_section, "analysis": raw.get("analysis", {})}
    cfg = config_from_dict(apply_overrides(raw, _checked_overrides(overrides, command)))
    spec = _checkpoint_spec(payload)
    data = load_dataset(cfg.data)
    recorded = spec.get("in_shape", spec["kwargs"].get("in_shape", payload.get("in_shape")))
    _check_image_shape(recorded, data, dataset, trained_on)
    encoder = encoder_from_checkpoint(payload, spec)
    _check_image_shape(encoder.in_shape, data, dataset, trained_on)
    wanted = layers or encoder.layer_names
    unknown = [l for l in wanted if l not in encoder.layer_names]
    if unknown:
        raise ConfigError(f"unknown layer '{unknown[0]}'", f"choose from {', '.join(encoder.layer_names)}")
    return LoadedModel(encoder, cfg, data, list(wanted),
                       {"checkpoint": str(checkpoint), "regime": payload.get("regime"), "seed": payload.get("seed")},
                       f"{payload.get('regime', '?')} encoder (seed {payload.get('seed', '?')}) from {checkpoint}")


def _check_image_shape(expected: Any, data: Dataset, dataset: str, trained_on: Any) -> None:
    """The checkpoint's encoder takes images of one shape: refuse a dataset of another before building it."""
    try:
        shape = tuple(int(d) for d in expected)
    except (TypeError, ValueError):
        return  # not recorded in a usable form: the built encoder's own shape is checked instead
    if shape != tuple(data.image_shape):
        want, have = "×".join(map(str, shape))[:40], "×".join(map(str, data.image_shape))
        raise DataError(f"the checkpoint expects {want} images but {dataset} has {have}",
                        f"use a dataset with {want} images (it was trained on {trained_on})")


def _foreign_config(dataset: str, overrides: list[str], command: str) -> Config:
    return config_from_dict(apply_overrides({"name": "probe", "data": {"name": dataset}},
                                            _checked_overrides(overrides, command)))


def _state_dict_model(source: ModelSource, payload: Any, dataset: str, layers: list[str] | None,
                      overrides: list[str], command: str) -> LoadedModel:
    """A state_dict of the module ``--model`` builds, read at ``layers`` (module paths; 'latent' is its output)."""
    path = source.path
    if not source.model:
        raise ConfigError(f"'{path}' is not a replearn checkpoint, so replearn needs the model its weights belong to",
                          "pass --model package.module:Factory (and --model-kwargs) for a state_dict")
    state = payload["state_dict"] if isinstance(payload, dict) and isinstance(payload.get("state_dict"), dict) else payload
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"'{path}' does not hold a state_dict (names → tensors)", "save model.state_dict()")
    cfg = _foreign_config(dataset, overrides, command)
    module = build_module(source.model, source.kwargs, "--model", "--model-kwargs")
    load_state_dict_checked(module, state, f"state_dict '{path}'")
    data = load_dataset(cfg.data)
    encoder = TappedModule(module, data.image_shape, [l for l in (layers or []) if l != "latent"])
    return LoadedModel(encoder, cfg, data, list(layers) if layers else encoder.layer_names,
                       {"model_file": str(path), "model": source.model, "model_kwargs": source.kwargs},
                       f"{source.model} from {path}")


def _code_model(source: ModelSource, kind: str, dataset: str, layers: list[str] | None, overrides: list[str],
                command: str) -> LoadedModel:
    """A TorchScript module (its output) or a torch.export program (its output and graph nodes): loaded only
    with the user's explicit trust, since loading runs code the file contains; never with --model."""
    if source.model or not source.trust_code:
        raise refuse_code_file(source.path, kind, with_model=bool(source.model))
    cfg = _foreign_config(dataset, overrides, command)
    program = load_code_file(source.path, kind)
    data = load_dataset(cfg.data)
    taps = [l for l in (layers or []) if l != "latent"]
    encoder = TappedModule(program, data.image_shape, taps) if kind == TORCHSCRIPT else \
        ExportedGraph(program, data.image_shape, taps)
    name = "torchscript" if kind == TORCHSCRIPT else "torch.export"
    return LoadedModel(encoder, cfg, data, list(layers) if layers else encoder.layer_names,
                       {"model_file": str(source.path), "model": name, "trusted_code": True},
                       f"{kind} from {source.path}")


def load_for_evaluation(source: ModelSource, dataset: str, layers: list[str] | None, overrides: list[str],
                        command: str = "probe") -> LoadedModel:
    """Any model file: a replearn checkpoint, a state_dict of ``source.model`` (both read as weights only,
    size-bounded), or — trusted by the user — a TorchScript or torch.export file."""
    if not source.path.is_file():
        what = "is not a regular file" if source.path.exists() else "does not exist"
        raise CheckpointError(f"model file '{source.path}' {what}",
                              "pass a checkpoint from a run's checkpoints/ folder, or a state_dict with --model")
    layers = list(dict.fromkeys(layers)) if layers else None
    kind = model_file_kind(source.path)
    if kind in CODE_FORMATS:
        loaded = _code_model(source, kind, dataset, layers, overrides, command)
    else:
        payload = read_weights(source.path)
        replearn_file = isinstance(payload, dict) and payload.get("format") == CHECKPOINT_FORMAT
        model = _replearn_model if replearn_file else _state_dict_model
        loaded = model(source, payload, dataset, layers, overrides, command)
    loaded.data = analysis_view(loaded.data, loaded.cfg.analysis.max_images_per_split, loaded.cfg.data.split_seed)
    return loaded


def probe_model(source: ModelSource, dataset: str, layers: list[str] | None, overrides: list[str],
                json_path: str | Path | None = None, with_knn: bool = False, force: bool = False) -> tuple[str, Path]:
    """Linear (and optionally kNN) probe test accuracy of each requested layer, with the penalty chosen on
    validation; writes JSON with the results and the whole protocol. Returns (table text, JSON path)."""
    default = source.path.with_name(default_result_name(source.path, dataset, layers, with_knn))
    out = Path(json_path) if json_path else default
    check_output_file(out, "--json", force=force, own_default=out.absolute() == default.absolute())
    loaded = load_for_evaluation(source, dataset, layers, overrides)
    cfg, data = loaded.cfg, loaded.data
    rows = _probe_rows(loaded.encoder, data, cfg, loaded.layers, with_knn)
    write_output(out, "--json", lambda: write_json(out, {**loaded.about, "layers": loaded.layers,
                                                         "dataset": data.summary(), "protocol": _protocol(loaded, with_knn),
                                                         "results": rows}))
    header = (f"{loaded.title}, probed on {dataset}: {len(data.train_y)} train / {len(data.val_y)} val / "
              f"{len(data.test_y)} test")
    return header + "\n" + pd.DataFrame(rows).to_string(index=False), out


def _protocol(loaded: LoadedModel, with_knn: bool) -> dict:
    """Everything a probe result depends on besides the model: splits, normalisation, pooling, penalties."""
    cfg, data = loaded.cfg, loaded.data
    return {"splits": {"train": len(data.train_y), "val": len(data.val_y), "test": len(data.test_y)},
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


def export_features(source: ModelSource, dataset: str, layers: list[str] | None, overrides: list[str],
                    out: str | Path, force: bool = False) -> Path:
    """Write the model's features at ``layers`` for every split to an .npz (``<layer>.<split>`` arrays, N × D,
    pooled as for probing; ``labels.<split>``; ``images.test``, one fingerprint per test image; ``layers``), for scikit-learn, rsatoolbox, netrep and others."""
    out = Path(out)
    clash = next((name for name in ("labels", "images") if name in (layers or [])), None)
    if clash:
        raise ConfigError(f"--layer '{clash}' would be written as '{clash}.<split>', the arrays that hold the class "
                          "labels and the image fingerprints in the .npz", "read that layer with `replearn probe`, or give the submodule "
                          "another name in the model's class")
    check_output_file(out, "--out", force=force)
    loaded = load_for_evaluation(source, dataset, layers, overrides, command="features")
    data = loaded.data
    splits = {"train": data.train_x, "val": data.val_x, "test": data.test_x}
    features = extract_splits(loaded.encoder, splits, loaded.cfg.analysis.max_stage_features, layers=loaded.layers)
    arrays = {f"{layer}.{split}": f.numpy() for layer, by_split in features.items() for split, f in by_split.items()}
    arrays.update({f"labels.{split}": getattr(data, f"{split}_y").numpy() for split in splits})
    arrays["images.test"] = image_fingerprints(data.test_x.numpy())  # `replearn similarity` checks the image set
    arrays["layers"] = np.array(loaded.layers)
    return write_output(out, "--out", lambda: save_npz(out, **arrays))


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
