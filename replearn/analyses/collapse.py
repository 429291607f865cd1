"""Collapse diagnostics of every trained regime (``replearn.metrics.collapse``): the normalised per-dimension standard
deviation and RankMe of the latent and of the embedding the regime's loss compares (its projector's output),
on the analysis test images, and a one-line flag when a label-free regime collapsed."""
from __future__ import annotations

from typing import Any

import pandas as pd
import torch
import torch.nn as nn

from replearn.metrics.collapse import RANKME_FLOOR, STD_RATIO_FLOOR, collapse_report
from replearn.encoders.extract import eval_mode
from replearn.regimes import Regime, make_regime, regime_name
from replearn.analyses.base import Analysis, RunArtifacts, Section, SeedContext, final_layer, register_analysis
from replearn.analyses.render import table

GUIDE = ("Whether a regime's embeddings collapsed, to one point or onto a few directions, as objectives without "
         "negatives can (SimSiam without its stop-gradient does at once). For the latent and for the projector's "
         "output the loss compares: the per-dimension standard deviation of the ℓ2-normalised embeddings × √d "
         "(about 1 when spread over the sphere, 0 when collapsed; Chen & He 2021, Fig. 2) and RankMe, their "
         "effective rank (Garrido et al. 2023). Computed on the same test images for every model.")
BATCH = 500


@torch.no_grad()
def embeddings(regime: Regime, encoder: nn.Module, head: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
    """``regime.embed`` of the images ``x`` in eval mode, in batches, on the CPU (None: the regime has none)."""
    device = next(encoder.parameters()).device
    parts = []
    with eval_mode(encoder, head):
        for start in range(0, len(x), BATCH):
            xb = x[start:start + BATCH].to(device).contiguous(memory_format=torch.channels_last)
            out = regime.embed(encoder, head, xb)
            if out is None:
                return None
            parts.append(out.float().cpu())
    return torch.cat(parts) if parts else None


def regime_collapse(regime: Regime, encoder: nn.Module, head: nn.Module, x: torch.Tensor) -> dict[str, Any]:
    """``collapse_report`` of a trained regime on images ``x``: its latent and its projector's output."""
    with torch.no_grad(), eval_mode(encoder):
        device = next(encoder.parameters()).device
        latent = torch.cat([encoder(x[s:s + BATCH].to(device).contiguous(memory_format=torch.channels_last)).float()
                            .cpu() for s in range(0, len(x), BATCH)])
    return collapse_report(latent, embeddings(regime, encoder, head, x))


@register_analysis("collapse")
class Collapse(Analysis):
    name = "collapse"
    order = 42

    def compute(self, ctx: SeedContext) -> dict[str, pd.DataFrame]:
        specs = {regime_name(spec): spec for spec in ctx.cfg.train.regimes}
        labelled = {m.name: m.trained_with_labels for m in ctx.run.models}
        rows = []
        for model in ctx.regimes():
            if model not in ctx.fresh:
                continue
            latent = ctx.features[model][final_layer(ctx.features[model])]["test"][ctx.points]
            projection = None
            head, encoder = ctx.heads.get(model), ctx.encoders.get(model)
            if head is not None and encoder is not None and model in specs:
                regime = make_regime(specs[model], ctx.cfg.regimes.get(model))
                projection = embeddings(regime, encoder, head, ctx.data.test_x[torch.as_tensor(ctx.points)])
            report = collapse_report(latent, projection)
            rows.append({"model": model, "seed": ctx.seed, "labels_in_training": labelled.get(model, False),
                         **report})
        return {"collapse": pd.DataFrame(rows)}

    def sections(self, run: RunArtifacts) -> list[Section]:
        frame = run.csv("collapse")
        if frame is None or frame.empty:
            return []
        shown = frame.copy()
        shown["model"] = shown.model.map(lambda m: run.style(m)[0])
        columns = [c for c in ("model", "seed", "latent_std_ratio", "latent_rankme", "projection_std_ratio",
                               "projection_rankme", "collapsed") if c in shown]
        shown = shown[columns].rename(columns={
            "latent_std_ratio": "latent std·√d", "latent_rankme": "latent RankMe",
            "projection_std_ratio": "projection std·√d", "projection_rankme": "projection RankMe"})
        return [Section("collapse", "Collapse", GUIDE, bullets=[collapse_flag(frame, run)],
                        table=table(shown, "collapse", run, decimals=2),
                        caption="Collapse diagnostics per model and seed; projection columns are empty for regimes "
                                "whose loss reads no projector.")]


def collapse_flag(frame: pd.DataFrame, run: RunArtifacts | None = None) -> str:
    """The report's one line: which label-free regimes collapsed (and in which seeds), or that none did."""
    label_free = frame[~frame.labels_in_training.astype(bool)] if "labels_in_training" in frame else frame
    bad = label_free[label_free.collapsed.astype(bool)]
    rule = (f"RankMe < {RANKME_FLOOR:g} on the latent or the projector's output, or std·√d < {STD_RATIO_FLOOR} "
            "on the latter")
    if bad.empty:
        return f"No label-free regime collapsed ({rule})."
    names = sorted({(run.style(m)[0] if run is not None else m) for m in bad.model})
    return f"Collapsed: {', '.join(names)} ({rule}; seeds {sorted(set(int(s) for s in bad.seed))})."
