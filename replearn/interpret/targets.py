"""One explanation target for every model: the class logits of a linear probe on the model's frozen
final-layer features (encoder → standardiser → probe), so that a regime without a classifier is explained
on the same footing as the supervised one. The probe is refitted on the training features with the L2
penalty the probes analysis chose on validation for that layer, so it is the probe the report scores."""
from __future__ import annotations

from typing import Any

import pandas as pd
import torch
import torch.nn as nn

from replearn.metrics.probes import ProbeFit, Standardizer, prepare_labelled_features
from replearn.metrics.softmax import fit_softmax_regression


class ProbeLogits(nn.Module):
    """``features(x)`` (an encoder's latent, or flattened pixels) → (z − mean) / scale · W + b: a
    differentiable classifier over a frozen representation. ``features`` is kept in eval mode."""

    def __init__(self, features: nn.Module, mean: torch.Tensor, scale: torch.Tensor, coef: torch.Tensor,
                 intercept: torch.Tensor) -> None:
        super().__init__()
        self.features = features
        self.register_buffer("mean", mean.detach().float().clone())
        self.register_buffer("scale", scale.detach().float().clone())
        self.register_buffer("coef", coef.detach().float().clone())
        self.register_buffer("intercept", intercept.detach().float().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.features(x).flatten(1)
        return ((z - self.mean) / self.scale) @ self.coef + self.intercept

    def train(self, mode: bool = True) -> "ProbeLogits":
        super().train(mode)
        self.features.eval()  # batch norm of a frozen encoder always uses its running statistics
        return self


class HeadLogits(nn.Module):
    """A regime's own classifier: ``head(encoder(x))`` (the supervised regime's target beside its probe)."""

    def __init__(self, encoder: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.encoder, self.head = encoder, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


def fit_probe(train_features: torch.Tensor, train_labels: torch.Tensor, l2: float, fit: ProbeFit = ProbeFit()
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mean, scale, W: D×K, b: K) of the multinomial logistic regression ``linear_probe`` fits with
    penalty ``l2`` (same standardisation, tolerance and iteration cap). Labels must be 0..K−1."""
    x, classes, target = prepare_labelled_features(train_features, train_labels)
    if not torch.equal(classes, torch.arange(len(classes), device=classes.device)):
        raise ValueError("fit_probe needs labels 0..K-1 with every class present")
    scaler = Standardizer(per_feature=fit.standardize).fit(x)
    w, b, _ = fit_softmax_regression(scaler.transform(x), target, len(classes), [float(l2)], fit.max_iter, fit.tol)
    return scaler.mean_, scaler.scale_, w[0], b[0]


def chosen_l2(probes: pd.DataFrame | None, model: str, layer: str, seed: int, default: float) -> float:
    """The L2 penalty the probes analysis chose on validation for ``model``'s ``layer`` (this seed's, else
    any seed's); ``default`` when the table lacks it."""
    if probes is None or not len(probes):
        return default
    rows = probes[(probes.model == model) & (probes.layer == layer) & (probes.probe == "linear")]
    same_seed = rows[rows.seed == seed] if "seed" in rows else rows
    rows = same_seed if len(same_seed) else rows
    return float(rows.chosen.iloc[0]) if len(rows) else default


def latent_probe(ctx: Any, model: str) -> ProbeLogits:
    """The model's probe target on a ``SeedContext``: fitted once per seed and model (kept in the run's
    memory under 'latent_probe'; an analysis that calls it requires 'probes', whose table gives the penalty).
    ``pixels`` is a probe on flattened pixels; ``pca`` has no target."""
    cache = ctx.memory("latent_probe")
    key = (ctx.seed, model)
    if key not in cache:
        layers = ctx.features[model]
        layer = "latent" if "latent" in layers else "input"  # the model's final layer, as the probes name it
        for old in [k for k in cache if k[0] != ctx.seed]:  # earlier seeds' encoders are not kept alive
            del cache[old]
        probes = ctx.tables.get("probes")
        cfg = ctx.cfg.analysis
        l2 = chosen_l2(probes, model, layer, ctx.seed, min(cfg.probe_l2_grid))
        fit = ProbeFit(cfg.probe_max_iter, cfg.probe_tol, ctx.standardize(model), cfg.probe_selection)
        mean, scale, w, b = fit_probe(layers[layer]["train"], ctx.labels["train"], l2, fit)
        features = nn.Flatten() if model == "pixels" else ctx.encoders[model]
        cache[key] = ProbeLogits(features, mean, scale, w, b).eval()
    return cache[key]


def explained_models(ctx: Any) -> list[str]:
    """The models an interpretability analysis explains on a seed: raw pixels (first seed only), the
    random-init encoder and every regime — each through its latent probe."""
    models = [m for m in ctx.features if m in ctx.encoders]
    return (["pixels"] if "pixels" in ctx.fresh else []) + models
