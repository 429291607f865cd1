"""Image folders: Fashion-MNIST written out as a PNG tree (train/<class>/, test/<class>/) and read with the
``folder`` dataset gives the same splits and the same probe accuracies as the IDX loader on the same
images; the second load reads the decode cache instead of decoding.

Checks: every split holds the same multiset of (image, label) pairs under both loaders; linear probes
(the run's protocol: penalty chosen on validation, default tolerance) on raw pixels and on an untrained encoder's
latent agree within 0.1 pp. Three protocols: "same order" (both loaders' images put in one content-defined
order: identical inputs must give identical probes), "loader order, best" (each loader's own order, the
default selection rule: the folder's images come class by class, the IDX file's interleaved, so the probe's
float32 sums run in another order, its stopping point moves, and two penalties that score within a few
validation images of each other can swap), and "loader order, one-se" (analysis.probe_selection=one-se,
the one-standard-error rule, which such a swap cannot flip).
Times: writing the PNGs, the first load (hash + decode + cache), the second (hash + cache read), the IDX load.

    python benchmarks/bench_folder.py [--train 0] [--keep DIR]
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import tempfile
import time
from pathlib import Path


from common import matmul_peak_gflops, report
from replearn.config.sections import DataConfig, load_config
from replearn.data import find_idx, load_dataset, read_idx
from replearn.encoders import build_encoder
from replearn.errors import DataError
from replearn.encoders.extract import extract_features
from replearn.metrics.probes import linear_probe
import torch

PROTOCOLS = {"same order": (True, "best"), "loader order, best": (False, "best"),
             "loader order, one-se": (False, "one-se")}


def write_png_tree(root: Path) -> int:
    """The Fashion-MNIST IDX files as root/{train,test}/<label>/<index>.png; returns the image count."""
    from PIL import Image

    files = find_idx("fashion-mnist", None, "")
    count = 0
    for split, key in (("train", "train"), ("test", "test")):
        images, labels = read_idx(files[f"{key}_x"]), read_idx(files[f"{key}_y"])
        for label in range(10):
            (root / split / str(label)).mkdir(parents=True, exist_ok=True)
        for i, (image, label) in enumerate(zip(images, labels)):
            Image.fromarray(image).save(root / split / str(label) / f"{i:05d}.png", compress_level=1)
        count += len(images)
    return count


def split_fingerprint(x, y, sort: bool = True) -> list[str]:
    """Hashes of each (image, label) of a split; sorted, equal lists mean the same images and labels."""
    raw = x[:].numpy()
    keys = [hashlib.sha1(img.tobytes() + bytes([int(label)])).hexdigest() for img, label in zip(raw, y.numpy())]
    return sorted(keys) if sort else keys


def canonical_order(x, y) -> "torch.Tensor":
    """Indices that sort a split by its images' bytes (and labels): the same order whichever loader read it."""
    keys = split_fingerprint(x, y, sort=False)
    return torch.tensor(sorted(range(len(keys)), key=keys.__getitem__))


def probes(data, encoder, grid, canonical: bool, selection: str) -> dict[str, float]:
    """Linear-probe test accuracy (the run's protocol) on raw pixels and on the untrained encoder's latent,
    in the loader's own order of images or, with ``canonical``, in an order that depends on the images alone."""
    out = {}
    orders = {s: (canonical_order(getattr(data, f"{s}_x"), getattr(data, f"{s}_y")) if canonical
                  else torch.arange(len(getattr(data, f"{s}_y")))) for s in ("train", "val", "test")}
    for name, fn in (("pixels", lambda x: x[:].flatten(1)),
                     ("random-encoder latent", lambda x: extract_features(encoder, x, ["latent"])["latent"])):
        splits = [(fn(getattr(data, f"{s}_x")[orders[s]]), getattr(data, f"{s}_y")[orders[s]])
                  for s in ("train", "val", "test")]
        out[name] = linear_probe(*splits, grid, selection=selection).test_accuracy
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=int, default=0, help="training images used by the probes (0 = all 60k)")
    parser.add_argument("--keep", help="write the PNG tree here and keep it (default: a temporary folder)")
    args = parser.parse_args()
    try:
        find_idx("fashion-mnist", None, "")
    except DataError:
        print("folder: skipped (Fashion-MNIST not installed: apt-get install dataset-fashion-mnist)")
        return
    gflops = matmul_peak_gflops()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="replearn-folder-"))
    cache = Path(tempfile.mkdtemp(prefix="replearn-cache-"))
    os.environ["REPLEARN_CACHE"] = str(cache)
    try:
        started = time.perf_counter()
        n = write_png_tree(work / "fmnist")
        write_s = time.perf_counter() - started
        settings = {"train_subset": args.train}
        started = time.perf_counter()
        idx = load_dataset(DataConfig(name="fashion-mnist", **settings))
        idx_s = time.perf_counter() - started
        timings = []
        for _ in range(2):
            started = time.perf_counter()
            folder = load_dataset(DataConfig(name="folder", root=str(work / "fmnist"), **settings))
            timings.append(time.perf_counter() - started)
        same = {s: split_fingerprint(getattr(idx, f"{s}_x"), getattr(idx, f"{s}_y"))
                == split_fingerprint(getattr(folder, f"{s}_x"), getattr(folder, f"{s}_y")) for s in ("train", "val", "test")}
        cfg = load_config(Path(__file__).resolve().parents[1] / "experiments" / "fashion_mnist.yaml")
        encoder = build_encoder(cfg.model, idx.image_shape, 0)
        grid = cfg.analysis.probe_l2_grid
        accuracy = {(loader, protocol): probes(d, encoder, grid, *PROTOCOLS[protocol])
                    for loader, d in (("idx", idx), ("folder", folder)) for protocol in PROTOCOLS}
    finally:
        shutil.rmtree(cache, ignore_errors=True)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    gaps = {f"{k}, {protocol}": round(100 * abs(accuracy["idx", protocol][k] - accuracy["folder", protocol][k]), 3)
            for protocol in PROTOCOLS for k in accuracy["idx", protocol]}
    report("folder", {
        "summary": (f"{n:,} PNGs written in {write_s:.0f} s; folder load {timings[0]:.1f} s first (decode), "
                    f"{timings[1]:.1f} s cached ({timings[0] / timings[1]:.1f}× faster), IDX {idx_s:.1f} s; same splits "
                    f"{all(same.values())}; probe gaps {gaps} pp; matmul {gflops:.0f} GFLOP/s"),
        "images": n, "write_png_seconds": round(write_s, 1), "folder_first_load_seconds": round(timings[0], 2),
        "folder_cached_load_seconds": round(timings[1], 2), "idx_load_seconds": round(idx_s, 2),
        "same_splits": same, "probe_accuracy": {f"{loader}, {protocol}": acc for (loader, protocol), acc in accuracy.items()},
        "probe_gap_pp": gaps, "matmul_gflops": round(gflops, 1)})


if __name__ == "__main__":
    main()
