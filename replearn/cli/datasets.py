"""``replearn datasets``: the known datasets, their options and where their files are."""

from __future__ import annotations

import argparse


def cmd_datasets(args: argparse.Namespace) -> int:
    from replearn.config.options import option_docs
    from replearn.data import DATASETS, dataset_status

    width = max(len(n) for n in DATASETS.names())
    for name, source in DATASETS.items():
        print(f"{name:<{width}}  {source.description}")
        print(f"{'':<{width}}  status: {dataset_status(name, args.data_root)}")
        for key, type_name, default, text in option_docs(source.Options, "data"):
            print(f"{'':<{width}}  {key} ({type_name}, default {default}): {text}")
    return 0
