"""Feature extraction: replearn's extract_features (inference mode, channels-last, large batches, every
layer in one pass) vs a plain loop (no_grad, default memory format, batch 256, one pass per layer, as a
hook-based tool would do). Also times `replearn report` re-rendering a finished run against the run's
own wall time.

    python benchmarks/bench_extraction.py [--run-dir reports/<a finished run>]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from common import ROOT, fashion_mnist_or_none, machine, report
from replearn.rundir.io import read_json
from replearn.config.sections import load_config
from replearn.encoders.extract import extract_features, pooled_grid
from replearn.encoders import build_encoder


def plain_loop(encoder, x: torch.Tensor, max_features: int) -> dict[str, torch.Tensor]:
    encoder.eval()
    infos = {i.name: i for i in encoder.feature_info}
    out = {}
    with torch.no_grad():
        for layer in encoder.layer_names:
            parts = []
            for start in range(0, len(x), 256):
                f = encoder.forward_features(x[start:start + 256], [layer])[layer]
                if layer != "latent":
                    f = F.adaptive_avg_pool2d(f, pooled_grid(infos[layer], max_features))
                parts.append(f.flatten(1))
            out[layer] = torch.cat(parts)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--run-dir", help="a finished run to re-render (default: newest under reports/)")
    args = parser.parse_args()
    cfg = load_config(ROOT / "experiments" / "fashion_mnist.yaml")
    data = fashion_mnist_or_none()
    x = data.test_x[:args.images] if data is not None else torch.randn(args.images, 1, 28, 28)
    encoder = build_encoder(cfg.model, (1, 28, 28), 0)
    extract_features(encoder, x[:500])
    started = time.perf_counter()
    ours = extract_features(encoder, x, max_stage_features=cfg.analysis.max_stage_features)
    ours_s = time.perf_counter() - started
    started = time.perf_counter()
    plain = plain_loop(encoder, x, cfg.analysis.max_stage_features)
    plain_s = time.perf_counter() - started
    assert all(torch.allclose(ours[k], plain[k], atol=1e-4) for k in ours), "the two paths disagree"
    result = {"images": len(x), "replearn_images_per_s": len(x) / ours_s, "plain_images_per_s": len(x) / plain_s,
              "speedup": plain_s / ours_s, "machine": machine()}
    summary = (f"extraction of every layer: {len(x) / ours_s:.0f} vs {len(x) / plain_s:.0f} images/s "
               f"({plain_s / ours_s:.1f}× a plain loop)")
    run_dir = Path(args.run_dir) if args.run_dir else None
    if run_dir is None:
        runs = sorted((ROOT / "reports").glob("*/metrics/summary.json"), key=lambda p: p.stat().st_mtime)
        run_dir = runs[-1].parent.parent if runs else None
    if run_dir is not None:
        from replearn.report.html import render_report

        started = time.perf_counter()
        render_report(run_dir, Path("/tmp") / "replearn-bench-report.html")
        render_s = time.perf_counter() - started
        run_s = read_json(run_dir / "metrics" / "summary.json")["wall_seconds"]
        result.update({"report_run": str(run_dir), "render_s": render_s, "run_s": run_s,
                       "render_fraction": render_s / run_s})
        summary += f"; report re-render {render_s:.1f}s = {render_s / run_s:.1%} of its run ({run_s:.0f}s, {run_dir.name})"
    report("extraction", {"summary": summary, **result,
                          "target": "faster than a plain loop; re-render < 10% of the run"})


if __name__ == "__main__":
    main()
