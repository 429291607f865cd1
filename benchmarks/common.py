"""Helpers shared by the benchmarks: machine facts, a matmul peak, data, and the one-line result format."""
from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}"


def matmul_peak_gflops(size: int = 1024, repeats: int = 10) -> float:
    """Best float32 matrix-multiply rate of this machine right now (GFLOP/s)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - started)
    return 2 * size ** 3 / best / 1e9


def fashion_mnist_or_none(**overrides):
    """The real Fashion-MNIST dataset if installed, else None (benchmarks then say what they used)."""
    from replearn.config.sections import DataConfig
    from replearn.data import load_dataset
    from replearn.errors import DataError

    try:
        return load_dataset(DataConfig(name="fashion-mnist", **overrides))
    except DataError:
        return None


RESULTS = Path(__file__).resolve().parent / "results"


def report(name: str, result: dict) -> None:
    """Print the benchmark's one-line result, save it as ``benchmarks/results/<name>.json`` (the source of
    the tables in benchmarks/README.md and of README's timings, see ``update_readmes.py``) and append it to
    $BENCH_RESULTS if set."""
    import datetime as dt

    result = {"benchmark": name, "date": dt.date.today().isoformat(), "machine": machine(), **result}
    print(f"{name}: {result['summary']}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    path = os.environ.get("BENCH_RESULTS")
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(result) + "\n")
