"""Research scale (issue 28): phase times of the default run across image sizes and image counts, on synthetic
10-class colour images, with each phase's growth exponent beside the work's, and the ETA printed after
training against the time that was actually left.

For every image size (at the smallest image count) and every image count (at the smallest size) it writes an
.npz of synthetic colour images (each class a coloured square at its own place, on noise), runs
``replearn run`` on it in its own process (default config: conv encoder, supervised and autoencoder, one
epoch; every default analysis unless ``--skip`` names some), and reads from its log the time of training,
feature extraction, each analysis and the report. A phase's growth exponent in pixels is the least-squares
slope of log(time) against log(pixels) over the sizes (in images: over the counts); the work — pixels ×
images — has exponent 1 in each, so a phase above ≈ 1.2 grows faster than the data it processes. Phases
under 0.5 s at both ends are not fitted (their times are start-up noise). The last column fits the two
largest image counts only: there the analyses' caps bind (``analysis.twonn_points`` from 12,000 training
images on, ``analysis_points`` from 30,000), and a capped phase stops growing faster than the images. The ETA
column is the run ETA the log printed after the last training epoch, over the seconds that actually followed.

Recorded with the same run's 2048² float32 matmul rate; the full grid (32→224 px, 600→15,000 images) is for a
quiet machine (the 32/96/224 px and 600→30,000-image grid takes about 20 minutes on 2 cores):

    python benchmarks/bench_research_scale.py [--sizes 32,64,96,160,224] [--images 600,3000,15000,30000]
        [--skip attributions,sanity] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import ROOT, machine, matmul_peak_gflops, report

# one epoch of the default experiment on the synthetic data, PNG figures only; label counts that 600 images of
# 10 classes can give (the default's 50 and 100 per class need more)
SETTINGS = ["name=scale", "data.name=npz", "train.epochs=1", "analysis.figure_formats=[png]",
            "analysis.label_counts=[1,5,10,25]"]
LINE = re.compile(r"^\[\s*([\d.]+)s\] (.*)$")
DONE = re.compile(r"seed \d+: (\w+) done \(([\d.]+)s\)")


def synthetic_colour(path: Path, size: int, images: int, classes: int = 10, seed: int = 0) -> None:
    """``images`` colour images (uint8, N×H×W×3, a sixth of them the test split): class c is a square of colour c
    at place c on uniform noise."""
    rng = np.random.RandomState(seed)
    y = np.arange(images) % classes
    x = rng.randint(0, 90, size=(images, size, size, 3)).astype(np.uint8)
    side = max(2, size // 4)
    colours = rng.randint(100, 255, size=(classes, 3))
    for c in range(classes):
        r, col = (c // 4) * size // 4, (c % 4) * size // 4
        x[y == c, r:r + side, col:col + side] = colours[c]
    perm = rng.permutation(images)
    x, y = x[perm], y[perm]
    test = images // 6
    np.savez(path, train_x=x[test:], train_y=y[test:], test_x=x[:test], test_y=y[:test])


def eta_seconds(text: str) -> float | None:
    """Seconds of a logged "run ETA ≈ 1 h 02 min" / "4 min 05 s" / "12 s"; None without one."""
    m = re.search(r"run ETA ≈ (.+)$", text)
    if not m:
        return None
    parts = {unit: int(v) for v, unit in re.findall(r"(\d+) (h|min|s)\b", m.group(1))}
    return 3600 * parts.get("h", 0) + 60 * parts.get("min", 0) + parts.get("s", 0)


def run_once(size: int, images: int, skip: list[str], threads: int, work: Path) -> dict:
    """One ``replearn run``; its phases' seconds, the ETA after training and the actual time left."""
    data = work / f"colour_{size}_{images}.npz"
    synthetic_colour(data, size, images)
    out = work / f"run_{size}_{images}"
    argv = [sys.executable, "-m", "replearn.cli", "run", "--out", str(out), "--threads", str(threads),
            *[arg for kv in SETTINGS + [f"data.root={data}", f"analysis.skip=[{','.join(skip)}]"]
              for arg in ("--set", kv)]]
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    wall = time.perf_counter() - started
    if done.returncode != 0:
        return {"size": size, "images": images, "error": done.stderr.strip().splitlines()[-1][:300]}
    phases: dict[str, float] = {}
    stamps = [(float(m.group(1)), m.group(2)) for m in map(LINE.match, done.stderr.splitlines()) if m]
    training_end = extraction_start = analyses_end = end = None
    eta_after_training = None
    for t, text in stamps:
        if " epoch " in text and "run ETA" in text:
            training_end, eta_after_training = t, eta_seconds(text)
        elif text.startswith("extracting baseline") and extraction_start is None:
            extraction_start = t
        elif (m := DONE.search(text)):
            phases[m.group(1)] = float(m.group(2))
        elif "analyses done in" in text:
            analyses_end = t
        elif text.startswith("done in"):
            end = t
    first = next((t for t, text in stamps if " epoch " in text), None)
    if first is not None and training_end is not None:
        phases["training"] = training_end - first
    if extraction_start is not None:
        first_analysis = next((t for t, text in stamps if t >= extraction_start and "probing" in text), None)
        if first_analysis is not None:
            phases["extraction"] = first_analysis - extraction_start
    if analyses_end is not None and end is not None:
        phases["report"] = end - analyses_end
    try:  # every analysis's time, as the run recorded it (the log names only those over 0.5 s)
        recorded = json.loads((out / "metrics" / "summary.json").read_text())
        phases.update({k: float(v) for k, v in recorded.get("analysis_seconds", {}).items() if float(v) > 0})
        phases["extraction"] = float(recorded.get("feature_extraction_seconds", phases.get("extraction", 0.0)))
    except (OSError, ValueError):
        pass
    try:  # training: each regime's recorded train_seconds (the log's epoch lines say when an epoch ended)
        import csv

        with open(out / "metrics" / "models.csv", encoding="utf-8") as fh:
            phases["training"] = sum(float(row["train_seconds"]) for row in csv.DictReader(fh))
    except (OSError, ValueError, KeyError):
        pass
    left = end - training_end if end is not None and training_end is not None else None
    return {"size": size, "images": images, "pixels": 3 * size * size, "wall_seconds": round(wall, 1),
            "phases": {k: round(v, 2) for k, v in phases.items()}, "eta_after_training": eta_after_training,
            "actual_left": None if left is None else round(left, 1)}


def exponent(points: list[tuple[float, float | None]]) -> float | None:
    """Least-squares slope of log(time) on log(x) over the runs that recorded the phase; None with fewer than two
    of them or when every time is under 0.5 s (start-up noise)."""
    points = [(x, t) for x, t in points if t is not None and t > 0]
    if len(points) < 2 or max(t for _, t in points) < 0.5:
        return None
    lx, lt = np.log([p[0] for p in points]), np.log([p[1] for p in points])
    return float(np.polyfit(lx, lt, 1)[0])


def growth(rows: list[dict], key: str, fixed: dict) -> dict[str, float | None]:
    chosen = [r for r in rows if "phases" in r and all(r[k] == v for k, v in fixed.items())]
    names = sorted({p for r in chosen for p in r["phases"]})
    x = "pixels" if key == "size" else "images"
    return {name: exponent([(r[x], r["phases"].get(name)) for r in chosen]) for name in names}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="32,64,96,160,224")
    parser.add_argument("--images", default="600,3000,15000,30000")
    parser.add_argument("--skip", default="", help="analyses left out (comma-separated), e.g. for a loaded machine")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--more-images", default="", help="image counts (at the smallest size) to add to the stored "
                        "result, e.g. 60000 to go beyond the kNN probe's cap; the grid itself is not run again")
    args = parser.parse_args()
    sizes = [int(v) for v in args.sizes.split(",")]
    counts = [int(v) for v in args.images.split(",")]
    if args.more_images:
        stored = json.loads((ROOT / "benchmarks" / "results" / "research_scale.json").read_text())
        old_rows = stored["runs"]
        sizes = sorted({r["size"] for r in old_rows})
        counts = sorted({r["images"] for r in old_rows if r["size"] == sizes[0]} | {int(v) for v in
                                                                                   args.more_images.split(",")})
        args.skip, args.threads = ",".join(stored["skipped"]), stored["threads"]
    skip = [v for v in args.skip.split(",") if v]
    gflops = matmul_peak_gflops(2048, 3)
    grid_gflops = stored["matmul_gflops"] if args.more_images else gflops  # the rate the stored grid ran at
    load = os.getloadavg()[0]
    print(f"matmul 2048²: {gflops:.0f} GFLOP/s; load average {load:.1f}; {machine()}", flush=True)
    rows = list(old_rows) if args.more_images else []
    with tempfile.TemporaryDirectory() as tmp:
        plan = [(s, counts[0]) for s in sizes] + [(sizes[0], n) for n in counts[1:]]
        for size, images in plan:
            if any(r["size"] == size and r["images"] == images for r in rows):
                continue
            row = run_once(size, images, skip, args.threads, Path(tmp))
            row["matmul_gflops"] = round(gflops, 1)
            rows.append(row)
            ratio = (row["eta_after_training"] / row["actual_left"]
                     if row.get("eta_after_training") and row.get("actual_left") else None)
            row["eta_ratio"] = None if ratio is None else round(ratio, 2)
            print(f"{size:>4} px × {images:>6} images: {row.get('wall_seconds', '-')} s; ETA after training "
                  f"{row.get('eta_after_training')} s vs {row.get('actual_left')} s left; "
                  + (row.get("error") or ", ".join(f"{k} {v:.1f}" for k, v in row["phases"].items())), flush=True)
    by_pixels = growth(rows, "size", {"images": counts[0]})
    by_images = growth(rows, "images", {"size": sizes[0]})
    # between the two largest counts: where the analyses' caps (analysis_points, twonn_points, knn_eval_points,
    # …) bind, a phase with a cap stops growing; below a cap it may grow faster than the images (TwoNN is m²)
    last = [r for r in rows if "phases" in r and r["size"] == sizes[0] and r["images"] in counts[-2:]]
    beyond = growth(last, "images", {"size": sizes[0]}) if len(counts) > 2 else by_images
    print(f"{'phase':>18} | exponent in pixels (work: 1) | in images (work: 1) | {counts[-2]}→{counts[-1]} images")
    for name in sorted(set(by_pixels) | set(by_images)):
        px, im, be = by_pixels.get(name), by_images.get(name), beyond.get(name)
        print(f"{name:>18} | {'-' if px is None else f'{px:.2f}':>28} | {'-' if im is None else f'{im:.2f}':>19} | "
              f"{'-' if be is None else f'{be:.2f}':>8}")
    worst_px = max((v for v in by_pixels.values() if v is not None), default=math.nan)
    worst_im = max((v for v in by_images.values() if v is not None), default=math.nan)
    worst_beyond = max((v for v in beyond.values() if v is not None), default=math.nan)
    worst_name = max((k for k, v in by_images.items() if v is not None), key=lambda k: by_images[k], default="")
    largest = max((r for r in rows if "wall_seconds" in r and r["images"] == counts[0]), key=lambda r: r["size"],
                  default=None)
    scaled = None if largest is None else largest["wall_seconds"] * largest.get("matmul_gflops", grid_gflops) / 193
    report("research_scale", {
        "summary": f"sizes {sizes} px at {counts[0]} images, counts {counts} at {sizes[0]} px"
                   + (f" (analyses skipped: {', '.join(skip)})" if skip else "")
                   + f": largest growth exponent {worst_px:.2f} in pixels, {worst_im:.2f} in images ({worst_name}), "
                   + f"{worst_beyond:.2f} from {counts[-2]:,} to {counts[-1]:,} images; "
                   + (f"{largest['size']} px run {largest['wall_seconds']:.0f} s ({scaled:.0f} s scaled to 193 "
                      "GFLOP/s)" if largest else "")
                   + f"; load average {load:.1f}",
        "target": "every phase's exponent ≤ 1.2 in pixels and in images; 224 px ≤ 10 min at 193 GFLOP/s; ETA "
                  "after training within 2×",
        "matmul_gflops": round(grid_gflops, 1), "load_average": round(load, 2), "threads": args.threads,
        "skipped": skip, "runs": rows, "exponent_in_pixels": by_pixels, "exponent_in_images": by_images,
        "exponent_in_images_largest_two": beyond})


if __name__ == "__main__":
    main()
