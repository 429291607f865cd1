"""Linear probe: replearn's L-BFGS probe vs scikit-learn's LogisticRegression(lbfgs) on the same
standardised Fashion-MNIST features, the same L2 penalty and the same stopping rule (largest absolute
gradient entry ≤ 1e-4, scikit-learn's default tol; at most 1000 iterations), so both reach the same optimum.

Features: raw pixels (784), and the untrained Fashion-MNIST encoder's stage1 (wide, 1024) and latent (256).
Ratio = scikit-learn time / replearn time; accuracies must agree within 0.3 percentage points.

    python benchmarks/bench_probe.py [--train 54000]
"""
from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np

from common import fashion_mnist_or_none, machine, report
from replearn.config.sections import load_config
from replearn.encoders.extract import extract_features
from replearn.encoders import build_encoder
from replearn.metrics.probes import LinearProbe, Standardizer

L2 = 1e-4  # the penalty the run's validation search picks most often on these features
WIDE = 1024  # stage features pooled to at most this many: stage1 is then 16 channels × 8×8 = 1024 wide


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=int, default=0, help="training images (0 = the full 54k)")
    args = parser.parse_args()
    data = fashion_mnist_or_none(train_subset=args.train)
    if data is None:
        print("probe: skipped (Fashion-MNIST not installed: apt-get install dataset-fashion-mnist)")
        return
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    cfg = load_config(Path(__file__).resolve().parents[1] / "experiments" / "fashion_mnist.yaml")
    encoder = build_encoder(cfg.model, data.image_shape, 0)
    train = extract_features(encoder, data.train_x, ["stage1", "latent"], WIDE)
    test = extract_features(encoder, data.test_x, ["stage1", "latent"], WIDE)
    train["pixels"], test["pixels"] = data.train_x.flatten(1), data.test_x.flatten(1)
    results = {}
    for name in ("pixels", "stage1", "latent"):
        scaler = Standardizer().fit(train[name])
        ztr, zte = scaler.transform(train[name]), scaler.transform(test[name])
        started = time.perf_counter()
        ours = LinearProbe(l2=L2, max_iter=1000, tol=1e-4, standardize=False).fit(ztr, data.train_y)
        ours_s = time.perf_counter() - started
        ours_acc = ours.score(zte, data.test_y)
        c = 1.0 / (L2 * len(ztr))  # the same objective: mean CE + l2/2 |W|^2  <=>  C = 1 / (l2 n)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            started = time.perf_counter()
            sk = LogisticRegression(C=c, solver="lbfgs", max_iter=1000, tol=1e-4).fit(ztr.numpy(),
                                                                                      data.train_y.numpy())
            sk_s = time.perf_counter() - started
        sk_acc = float((sk.predict(zte.numpy()) == data.test_y.numpy()).mean())
        results[name] = {"dim": int(ztr.shape[1]), "replearn_s": ours_s, "sklearn_s": sk_s, "speedup": sk_s / ours_s,
                         "replearn_acc": ours_acc, "sklearn_acc": sk_acc, "gap_pp": 100 * (ours_acc - sk_acc),
                         "sklearn_iter": int(np.max(sk.n_iter_)), "replearn_iter": ours.n_iter_}
    summary = "; ".join(f"{k} (d={v['dim']}): {v['speedup']:.1f}× faster ({v['replearn_s']:.1f}s vs {v['sklearn_s']:.0f}s, "
                        f"{v['replearn_iter']} vs {v['sklearn_iter']} iterations to the same tolerance), "
                        f"acc {v['replearn_acc']:.4f} vs {v['sklearn_acc']:.4f} ({v['gap_pp']:+.2f} pp)"
                        for k, v in results.items())
    report("probe", {"summary": summary, "results": results, "train_images": len(data.train_y), "machine": machine(),
                     "target": ">= 10x faster, accuracy within 0.3 pp"})


if __name__ == "__main__":
    main()
