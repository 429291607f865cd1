"""Research-scale data in the layouts researchers have (issue 28): STL-10 in its published binary layout (600
images, 96²), a folder of 224² colour images, and a folder of 90 larger images decoded at 256 px. Each is
written here (no real STL-10 files exist on these machines: the bytes follow the published format, as in
tests/unit/test_stl10.py), then one `replearn run` with every default analysis (one epoch, PNG figures) must end
`complete`. Its wall time, peak memory, phase times and the ETA printed after training are recorded, with the
same run's 2048² matmul rate.

    python benchmarks/bench_layouts.py [--only stl10,folder224,folder256] [--images 600] [--conditions TEXT]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from bench_research_scale import LINE, eta_seconds
from common import ROOT, machine, matmul_peak_gflops, report

CLASSES = ("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck")
SETTINGS = ["train.epochs=1", "analysis.figure_formats=[png]", "analysis.label_counts=[1,5,10,25]"]


def class_images(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` uint8 colour images (N×size×size×3) of 10 classes: class c is a square of colour c at place c on
    uniform noise (learnable, so that the probes have something to find)."""
    rng = np.random.RandomState(seed)
    y = np.arange(n) % len(CLASSES)
    x = rng.randint(0, 90, size=(n, size, size, 3)).astype(np.uint8)
    side, colours = max(2, size // 4), np.random.RandomState(99).randint(100, 255, size=(len(CLASSES), 3))
    for c in range(len(CLASSES)):
        r, col = (c // 4) * size // 4, (c % 4) * size // 4
        x[y == c, r : r + side, col : col + side] = colours[c]
    perm = rng.permutation(n)
    return x[perm], y[perm]


def write_stl10(root: Path, images: int) -> list[str]:
    """stl10_binary/ in the published layout: uint8 3×96×96 per image, each channel column by column; labels
    1–10; class_names.txt. A sixth of the images are the test split; no unlabelled file (data.unlabelled=0)."""
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    x, y = class_images(images, 96, 0)
    test = images // 6
    for split, rows in (("test", slice(0, test)), ("train", slice(test, None))):
        chw = x[rows].transpose(0, 3, 2, 1)  # N×H×W×C → N×C×W×H: the published column-major order
        (folder / f"{split}_X.bin").write_bytes(np.ascontiguousarray(chw).tobytes())
        (folder / f"{split}_y.bin").write_bytes((y[rows] + 1).astype(np.uint8).tobytes())
    (folder / "class_names.txt").write_text("\n".join(CLASSES) + "\n")
    return ["data.name=stl10", f"data.root={root}", "data.unlabelled=0"]


def write_folder(root: Path, images: int, size: int, decode_at: int = 0) -> list[str]:
    """train/ and test/ folders of JPEG files, one sub-folder per class (a sixth of the images are test)."""
    x, y = class_images(images, size, 1)
    test = images // 6
    for i, (image, label) in enumerate(zip(x, y, strict=True)):
        split = "test" if i < test else "train"
        path = root / "images" / split / CLASSES[label] / f"{i:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(path, quality=92)
    sets = ["data.name=folder", f"data.root={root / 'images'}"]
    if decode_at:  # 90 images leave 4–8 training images per class: label counts they can give
        sets += [f"data.image_size={decode_at}", "analysis.label_counts=[1,2]"]
    return sets


def run(name: str, sets: list[str], work: Path) -> dict:
    out = work / f"run_{name}"
    argv = [
        sys.executable,
        "-m",
        "replearn.cli",
        "run",
        "--out",
        str(out),
        *[arg for kv in SETTINGS + sets for arg in ("--set", kv)],
    ]
    # through a small parent of its own, so that each run's peak memory is its own (RUSAGE_CHILDREN keeps the
    # largest child so far)
    parent = (
        "import resource, subprocess, sys; done = subprocess.run(sys.argv[1:]); "
        "print('peak_kb', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); "
        "sys.exit(done.returncode)"
    )
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", parent, *argv], cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - started
    peak = (
        next((int(line.split()[1]) for line in reversed(done.stderr.splitlines()) if line.startswith("peak_kb ")), 0)
        / 1024
    )
    state = json.loads((out / "status.json").read_text())["state"] if (out / "status.json").exists() else "none"
    stamps = [(float(m.group(1)), m.group(2)) for m in map(LINE.match, done.stderr.splitlines()) if m]
    trained = [(t, eta_seconds(text)) for t, text in stamps if " epoch " in text and "run ETA" in text]
    end = next((t for t, text in stamps if text.startswith("done in")), None)
    phases = {}
    if (out / "metrics" / "summary.json").exists():
        recorded = json.loads((out / "metrics" / "summary.json").read_text())
        phases = {k: round(float(v), 1) for k, v in recorded.get("analysis_seconds", {}).items() if float(v) >= 1}
    row = {
        "run": name,
        "state": state,
        "exit": done.returncode,
        "wall_s": round(wall, 1),
        "peak_rss_mb": round(peak),
        "slowest_analyses": dict(sorted(phases.items(), key=lambda kv: -kv[1])[:5]),
    }
    if trained and end is not None:
        row.update(eta_after_training=trained[-1][1], actual_left=round(end - trained[-1][0], 1))
    if done.returncode != 0:
        row["error"] = (
            [line for line in done.stderr.strip().splitlines() if not line.startswith("peak_kb ")] or ["?"]
        )[-1][:300]
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="stl10,folder224,folder256", help="which runs (comma-separated)")
    parser.add_argument("--images", type=int, default=600, help="images of the STL-10 and 224² runs")
    parser.add_argument("--conditions", default="quiet", help="what else ran on the machine")
    args = parser.parse_args()
    gflops = matmul_peak_gflops(2048, 5)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        builders = {
            "stl10": lambda: write_stl10(work / "stl10", args.images),
            "folder224": lambda: write_folder(work / "folder224", args.images, 224),
            "folder256": lambda: write_folder(work / "folder256", 90, 320, decode_at=256),
        }
        for name in args.only.split(","):
            rows.append(run(name, builders[name](), work))
    parts = [
        f"{r['run']}: {r['state']} in {r['wall_s']:.0f} s ({r['wall_s'] * gflops / 193:.0f} s scaled to "
        f"193 GFLOP/s), peak {r['peak_rss_mb']} MB"
        for r in rows
    ]
    report(
        "layouts",
        {
            "summary": "; ".join(parts) + f" [matmul {gflops:.0f} GFLOP/s; {args.conditions}]",
            "results": rows,
            "machine": machine(),
            "matmul_gflops": gflops,
            "conditions": args.conditions,
            "target": "each run complete; the 224² run ≤ 10 min scaled to 193 GFLOP/s",
        },
    )


if __name__ == "__main__":
    main()
