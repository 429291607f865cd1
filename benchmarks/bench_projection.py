"""Projection: replearn's 2-D UMAP of 10k latent vectors vs umap.UMAP() with defaults, each in a fresh
process, end to end (interpreter start, imports and numba compilation included), with the trustworthiness
of both embeddings.

The vectors are the untrained Fashion-MNIST encoder's latent on the 10k test images (synthetic clusters if
Fashion-MNIST is absent). Ratio = umap-learn time / replearn time.

    python benchmarks/bench_projection.py
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import ROOT, fashion_mnist_or_none, machine, report

RUN_REPLEARN = """
import sys, numpy as np
sys.path.insert(0, {root!r})
from replearn.metrics.umap import umap_embed
x = np.load({src!r})
np.save({dst!r}, umap_embed(x, n_neighbors=15, seed=0))
"""
RUN_UMAP = """
import numpy as np, umap
x = np.load({src!r})
np.save({dst!r}, umap.UMAP(random_state=None).fit_transform(x))
"""


def vectors() -> tuple[np.ndarray, str]:
    data = fashion_mnist_or_none()
    if data is None:
        rng = np.random.RandomState(0)
        y = rng.randint(0, 10, 10000)
        return (rng.randn(10, 256)[y] * 3 + rng.randn(10000, 256)).astype(np.float32), "synthetic clusters"
    from replearn.config.sections import load_config
    from replearn.encoders.extract import extract_features
    from replearn.encoders import build_encoder

    cfg = load_config(ROOT / "experiments" / "fashion_mnist.yaml")
    encoder = build_encoder(cfg.model, data.image_shape, 0)
    return extract_features(encoder, data.test_x, ["latent"])["latent"].numpy(), "Fashion-MNIST test latents"


def timed(code: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - started


def main() -> None:
    from replearn.metrics.umap import trustworthiness

    x, source = vectors()
    with tempfile.TemporaryDirectory() as tmp:
        src, ours_out, theirs_out = (str(Path(tmp) / n) for n in ("x.npy", "ours.npy", "theirs.npy"))
        np.save(src, x)
        ours_s = timed(RUN_REPLEARN.format(root=str(ROOT), src=src, dst=ours_out))
        theirs_s = timed(RUN_UMAP.format(src=src, dst=theirs_out))
        ours_tw = trustworthiness(x, np.load(ours_out), 15)
        theirs_tw = trustworthiness(x, np.load(theirs_out), 15)
    summary = (f"{len(x)} {source} (d={x.shape[1]}): {theirs_s / ours_s:.1f}× faster end to end "
               f"({ours_s:.1f}s vs umap-learn {theirs_s:.1f}s), trustworthiness(k=15) {ours_tw:.4f} vs {theirs_tw:.4f} "
               f"({ours_tw - theirs_tw:+.4f})")
    report("projection", {"summary": summary, "replearn_s": ours_s, "umap_learn_s": theirs_s, "speedup": theirs_s / ours_s,
                          "replearn_trustworthiness": ours_tw, "umap_learn_trustworthiness": theirs_tw,
                          "machine": machine(), "target": ">= 2x faster, trustworthiness within 0.01"})


if __name__ == "__main__":
    main()
