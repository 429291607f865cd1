"""Streaming: a `replearn run` on an image folder several times larger than `data.memory_budget_mb` trains
and extracts features with its peak memory (max RSS) under the budget plus the footprint of the same run on a
small dataset (the model, its optimiser and activations, torch, the analyses and the report).

Three fresh processes, one after another:
  footprint  the same config on a folder of 13,000 images (its 9,360 training images also streamed)
  streamed   the full folder (N images), streamed from its uint8 cache
  in memory  only loading the full folder into memory (what streaming avoids), for contrast

The footprint run exercises everything that does not grow with the dataset: the model, optimiser and
activations at the same batch sizes (training batches, and evaluation batches of 1000, which need splits of
at least 1000 images), torch, the analyses and the report. Both runs analyse the same number of images per
split (analysis.max_images_per_split = what the small folder's validation split holds), since the features the
analyses keep in memory are set by that cap, not by the dataset's size. The difference between the two peaks
is what the dataset's size costs.

    python benchmarks/bench_streaming.py [--images 90000] [--budget-mb 64]
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from common import ROOT, matmul_peak_gflops, report

SIZE, CLASSES = 32, 10
SMALL_IMAGES = 13_000  # 1,040 validation and 2,600 test images: evaluation batches of 1000 occur
PEAK = ("import resource, sys\nfrom replearn.cli.main import main\ntry:\n    code = main(sys.argv[1:])\nfinally:\n"
        "    print('PEAK_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, flush=True)\nsys.exit(code)\n")
LOAD = ("import resource, sys\nfrom replearn.config.sections import DataConfig\nfrom replearn.data import load_dataset\n"
        "d = load_dataset(DataConfig(name='folder', root=sys.argv[1], plugin_options={'test_fraction': 0.2}))\n"
        "print('PEAK_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, flush=True)\n")


def write_tree(root: Path, n: int, seed: int = 0) -> None:
    """n colour images, SIZE×SIZE: a class-coloured square at a class position on noise, as root/<class>/*.png."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c in range(CLASSES):
        (root / f"class{c}").mkdir(parents=True, exist_ok=True)
    colours = rng.integers(60, 255, (CLASSES, 3))
    for i in range(n):
        c = i % CLASSES
        image = rng.integers(0, 80, (SIZE, SIZE, 3), dtype=np.uint8)
        r, q = 4 + 2 * (c % 5), 4 + 4 * (c // 5)
        image[r:r + 12, q:q + 12] = colours[c]
        Image.fromarray(image).save(root / f"class{c}" / f"{i:06d}.png", compress_level=1)


def child(code: str, *args: str, env: dict | None = None) -> tuple[int, float]:
    """Run python code in a fresh process; its peak RSS (MiB) and wall time."""
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    peak = [line for line in out.stdout.splitlines() if line.startswith("PEAK_KB")]
    if out.returncode != 0 or not peak:
        raise SystemExit(f"child failed ({out.returncode}): {out.stderr[-2000:]}")
    return int(peak[-1].split()[1]) / 1024, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=90_000)
    parser.add_argument("--budget-mb", type=int, default=64)
    args = parser.parse_args()
    import os

    gflops = matmul_peak_gflops()
    tmp = Path(tempfile.mkdtemp(prefix="replearn-stream-"))
    env = {**os.environ, "REPLEARN_CACHE": str(tmp / "cache")}
    try:
        started = time.perf_counter()
        write_tree(tmp / "big", args.images)
        small = SMALL_IMAGES
        write_tree(tmp / "small", small, seed=1)
        write_s = time.perf_counter() - started
        # decode both once (in this process, with worker processes), so the measured runs read their caches
        os.environ["REPLEARN_CACHE"] = env["REPLEARN_CACHE"]
        from replearn.config.sections import DataConfig
        from replearn.data import load_dataset

        started = time.perf_counter()
        options = {"test_fraction": 0.2, "memory_budget_mb": args.budget_mb}
        big = load_dataset(DataConfig(name="folder", root=str(tmp / "big"), plugin_options=options))
        decode_s = time.perf_counter() - started
        small_data = load_dataset(DataConfig(name="folder", root=str(tmp / "small"), plugin_options=options))
        if not small_data.streamed:
            raise SystemExit(f"the {small:,}-image folder fits the {args.budget_mb} MiB budget: raise SMALL_IMAGES")
        cap = min(len(small_data.train_y), len(small_data.val_y), len(small_data.test_y))
        uint8_mib = args.images * 3 * SIZE * SIZE / 2**20
        config = {"name": "stream", "data": {"name": "folder", "test_fraction": 0.2},
                  "model": {"channels": [16, 32, 64], "latent_dim": 32},
                  "train": {"regimes": ["supervised", "autoencoder"], "epochs": 1, "batch_size": 128,
                            "probe_train_images": 2000},
                  "analysis": {"max_images_per_split": cap, "projection_points": 0, "analysis_points": 1000,
                               "label_counts": [max(1, cap // (2 * CLASSES))], "label_draws": 1, "figure_formats": ["png"]}}
        cfg_path = tmp / "stream.yaml"
        cfg_path.write_text(yaml.safe_dump(config))
        runs = {}
        for name, folder in (("footprint", "small"), ("streamed", "big")):
            runs[name] = child(PEAK, "run", str(cfg_path), "--set", f"data.root={tmp / folder}", "--set",
                               f"data.memory_budget_mb={args.budget_mb}", "--out", str(tmp / f"run-{name}"), "--quiet", env=env)
        runs["in memory (load only)"] = child(LOAD, str(tmp / "big"), env=env)
        summary = json.loads((tmp / "run-streamed" / "metrics" / "summary.json").read_text())
        streamed_json = json.loads((tmp / "run-streamed" / "dataset.json").read_text())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    footprint, streamed, loaded = (runs[k][0] for k in ("footprint", "streamed", "in memory (load only)"))
    over = streamed - footprint
    report("streaming", {
        "summary": (f"{args.images:,} colour {SIZE}×{SIZE} images ({uint8_mib:.0f} MiB uint8, "
                    f"{uint8_mib / args.budget_mb:.1f}× the {args.budget_mb} MiB budget): streamed run peak RSS "
                    f"{streamed:.0f} MiB = footprint {footprint:.0f} {over:+.0f} MiB (budget {args.budget_mb}: "
                    f"{'within' if over <= args.budget_mb else 'OVER'}; footprint: the same run on {small:,} images, both "
                    f"streamed and analysing {cap} images per split); loading it into memory peaks at {loaded:.0f} MiB; "
                    f"streamed run {runs['streamed'][1]:.0f} s vs footprint run {runs['footprint'][1]:.0f} s; "
                    f"matmul {gflops:.0f} GFLOP/s"),
        "images": args.images, "uint8_mib": round(uint8_mib, 1), "budget_mib": args.budget_mb,
        "peak_rss_mib": {k: round(v[0], 1) for k, v in runs.items()},
        "wall_seconds": {k: round(v[1], 1) for k, v in runs.items()},
        "streamed_minus_footprint_mib": round(over, 1), "analysed_images_per_split": cap,
        "target": "streamed peak <= footprint + budget",
        "footprint_images": small, "within_budget": over <= args.budget_mb,
        "write_png_seconds": round(write_s, 1), "first_decode_seconds": round(decode_s, 1),
        "streamed_from": streamed_json.get("streamed_from"), "train_images": streamed_json.get("train"),
        "run_summary": {k: summary.get(k) for k in ("wall_seconds", "feature_extraction_seconds")},
        "matmul_gflops": round(gflops, 1), "streamed_dataset": big.summary()["name"]})


if __name__ == "__main__":
    main()
