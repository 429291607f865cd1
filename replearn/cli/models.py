"""``replearn probe`` and ``replearn features``: probe any saved model's layers, or export their features."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from replearn.cli.parsing import FORCE_HELP, THREADS_HELP, _apply_threads
from replearn.errors import ReplearnError


def _add_probe(sub: Any) -> None:
    probe = sub.add_parser(
        "probe",
        help="linear-probe evaluation of a saved encoder or any model",
        description="Load a checkpoint written by `replearn run` (safely: weights only), "
        "extract features of each layer on a dataset, fit a linear probe with the "
        "penalty chosen on the validation split, and report test accuracy. Uses the "
        "run's own split and probe settings, so it reproduces the run's numbers. "
        "Models replearn did not train: a state_dict with --model (layers by module "
        "path, read with forward hooks), or, with --trust-model-code, a torch.export "
        ".pt2 program (its output and graph nodes) or a TorchScript file (its output).",
        epilog="examples:\n  replearn probe reports/fmnist-*/checkpoints/autoencoder_seed0.pt "
        "--dataset fashion-mnist --layer latent\n"
        "  replearn probe resnet.pt --model mypkg.nets:resnet18 --model-kwargs "
        "'{\"num_classes\": 10}' --dataset cifar10 --layer layer3 --layer layer4",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _model_arguments(probe, "probe")
    probe.add_argument("--knn", action="store_true", help="also run the kNN probe")
    probe.add_argument("--data-root", metavar="DIR", help="directory holding the dataset's IDX files")
    probe.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a data.* or analysis.* setting, e.g. --set data.train_subset=0",
    )
    probe.add_argument("--json", metavar="PATH", help="where to write the results (default: next to the checkpoint)")
    probe.add_argument("--force", action="store_true", help=FORCE_HELP.format(option="--json"))
    probe.add_argument("--threads", metavar="N", help=THREADS_HELP)


def _add_features(sub: Any) -> None:
    features = sub.add_parser(
        "features",
        help="export a model's features at chosen layers to an .npz file",
        description="Extract the features of any model (a replearn checkpoint, a state_dict "
        "with --model, or a trusted torch.export or TorchScript file) at the "
        "chosen layers for the train, validation and test splits, pooled as for "
        "probing, in eval mode, "
        "and write them with the labels to one .npz file (arrays "
        "'<layer>.<split>' and 'labels.<split>') for scikit-learn, rsatoolbox, "
        "netrep or any other tool.",
        epilog="example:\n  replearn features reports/fmnist-*/checkpoints/supervised_seed0.pt "
        "--dataset fashion-mnist --layer stage2 --layer latent --out feats.npz",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _model_arguments(features, "export")
    features.add_argument("--out", required=True, metavar="FILE", help="the .npz file to write")
    features.add_argument("--force", action="store_true", help=FORCE_HELP.format(option="--out"))
    features.add_argument("--data-root", metavar="DIR", help="directory holding the dataset's files")
    features.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a data.* or analysis.* setting, e.g. --set analysis.max_stage_features=4096",
    )
    features.add_argument("--threads", metavar="N", help=THREADS_HELP)


def _model_arguments(parser: argparse.ArgumentParser, verb: str) -> None:
    """The model file, --model, --model-kwargs, --dataset and --layer, shared by `probe` and `features`."""
    parser.add_argument(
        "checkpoint",
        metavar="MODEL_FILE",
        help="a .pt file from a run's checkpoints/ folder or a state_dict of the --model (both read "
        "as weights only: no code in them runs), or, with --trust-model-code, a torch.export "
        ".pt2 or TorchScript file",
    )
    parser.add_argument(
        "--model",
        metavar="IMPORT_PATH",
        help="for a state_dict saved elsewhere: the nn.Module class or factory it belongs to, as "
        "package.module:Name; --layer then names module paths (e.g. layer1, blocks.3) read "
        "by forward hooks, and 'latent' is the module's output. For a checkpoint of a plug-in "
        "encoder: its import path, confirming that replearn may import it",
    )
    parser.add_argument(
        "--trust-model-code",
        action="store_true",
        help="allow a TorchScript or torch.export (.pt2) file: loading either RUNS CODE THE FILE "
        "CONTAINS, so pass it only for files from an author you trust (--layer names a node of "
        "a .pt2 program's graph; a TorchScript file gives its output only)",
    )
    parser.add_argument(
        "--model-kwargs",
        metavar="JSON",
        default="{}",
        help="keyword arguments for --model as a JSON object, e.g. '{\"num_classes\": 10}'",
    )
    parser.add_argument("--dataset", required=True, metavar="NAME", help=f"dataset to {verb} on (`replearn datasets`)")
    parser.add_argument(
        "--layer",
        action="append",
        metavar="L",
        help=f"layer to {verb}, e.g. stage2 or latent (repeatable; default: every layer of a replearn "
        "encoder, the output of any other model)",
    )


def _model_kwargs(text: str) -> dict:
    import json

    try:
        kwargs = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: arrays or objects nested thousands deep
        kwargs = None
    if not isinstance(kwargs, dict):
        raise ReplearnError(
            f"--model-kwargs must be a JSON object, got {text[:60]!r}", "write it as '{\"name\": value}'"
        )
    return kwargs


def _data_overrides(args: argparse.Namespace) -> list[str]:
    return list(args.overrides) + ([f"data.root={args.data_root}"] if args.data_root else [])


def _model_source(args: argparse.Namespace) -> Any:
    from replearn.encoders.saved import ModelSource

    return ModelSource(Path(args.checkpoint), args.model, _model_kwargs(args.model_kwargs), args.trust_model_code)


def cmd_probe(args: argparse.Namespace) -> int:
    from replearn.encoders.saved import probe_model

    _apply_threads(args.threads)
    table, json_path = probe_model(
        _model_source(args), args.dataset, args.layer, _data_overrides(args), args.json, args.knn, args.force
    )
    print(table)
    print(f"results written to {json_path}")
    return 0


def cmd_features(args: argparse.Namespace) -> int:
    from replearn.encoders.saved import export_features

    _apply_threads(args.threads)
    out = export_features(_model_source(args), args.dataset, args.layer, _data_overrides(args), args.out, args.force)
    print(f"features written to {out}")
    return 0
