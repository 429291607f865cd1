"""What each model looks at: attribution maps of every model's class logit on the same test images
(Integrated Gradients, SmoothGrad, gradient × input, Grad-CAM; ``replearn.interpret.attributions``), one
grid per method whose rows are the images and whose columns are the models — the probe on raw pixels, the
random-init encoder, every regime through its latent probe, and each regime's own classifier.

The options shared by the three attribution analyses (attributions, sanity, faithfulness) are in
``ExplainOptions``; ``explain_setup`` gives their common inputs, and ``maps_for`` computes a map once per
seed, model, method and settings (the three analyses share it through the run's memory)."""
from __future__ import annotations

import dataclasses
import textwrap
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from replearn.interpret.attributions import LABELS, METHODS, NEEDS_STAGE, Attribution, Settings, applies, attribute
from replearn.encoders import build_encoder
from replearn.errors import ConfigError
from replearn.interpret.explain import (Explained, check_hookable, check_image_count, check_stage, default_stage,
                                 explained_targets, mean_image, model_label, order_models, select_images)
from replearn.config.options import opt
from replearn.analyses.plots import PAGE_WIDTH, plt
from replearn.analyses.base import Analysis, RunArtifacts, Section, SeedContext, register_analysis
from replearn.analyses.render import figure, table

GUIDE = ("Which pixels raise each model's logit for the image's true class, by method: red raises it, blue lowers "
         "it (each map scaled to its own largest magnitude; Grad-CAM keeps only what raises it). Every column "
         "explains a different model on the same images: regimes without a classifier through their latent "
         "linear probe, so every objective is read on the same footing.")
FIRST_SEED = " Computed on the first seed only (analyses.{name}.every_seed: true for every seed)."


@dataclass
class ExplainOptions:
    """The options every attribution analysis takes (written as analyses.<name>.<key>)."""

    images: int | None = opt(None, "test images explained, as many of each class as can be (the same images for "
                             "every model; at most the test split; default by image size: 8, 4 above 128×128)", min=1)
    methods: list[str] = opt(list(METHODS), "attribution methods (Captum): " + ", ".join(METHODS),
                             choices=tuple(METHODS), list_default=True)
    gradcam_stage: str = opt("", "encoder stage Grad-CAM reads ('' = the deepest stage whose map is at least 4×4)")
    ig_steps: int | None = opt(None, "Integrated Gradients' steps from the dataset-mean image (default by image "
                               "size: 16, 8 above 64×64)", min=1)
    internal_batch_size: int = opt(256, "inputs Integrated Gradients and SmoothGrad evaluate at once (bounds "
                                   "memory)", min=1)
    smoothgrad_samples: int | None = opt(None, "noisy copies of each image SmoothGrad averages (default by image "
                                         "size: 8, 4 above 64×64)", min=1)
    smoothgrad_noise: float = opt(0.15, "SmoothGrad's noise σ, as a fraction of each image's value range", gt=0.0,
                                  max=10.0)
    every_seed: bool = opt(False, "explain the models of every seed (default: the first seed only, which bounds "
                                  "the cost)")


# the defaults of the options left unset, by image size (height × width up to the limit): every method's forward
# and backward passes grow with the pixels, so above 64×64 the methods take fewer steps and samples and above
# 128×128 explain fewer images, which keeps their share of a run's analysis time bounded (issue 28)
SIZE_DEFAULTS: tuple[tuple[float, dict[str, int]], ...] = (
    (64 * 64, {"images": 8, "ig_steps": 16, "smoothgrad_samples": 8, "steps": 16, "infidelity_samples": 8,
               "sensitivity_samples": 2}),
    (128 * 128, {"images": 8, "ig_steps": 8, "smoothgrad_samples": 4, "steps": 8, "infidelity_samples": 4,
                 "sensitivity_samples": 1}),
    (float("inf"), {"images": 4, "ig_steps": 8, "smoothgrad_samples": 4, "steps": 8, "infidelity_samples": 4,
                    "sensitivity_samples": 1}))


def sized_options(options: Any, image_shape: tuple[int, ...]) -> Any:
    """``options`` with each option left unset (None) given its default for images of ``image_shape``
    (C×H×W; ``SIZE_DEFAULTS``); options set in the config are kept."""
    area = int(image_shape[-2]) * int(image_shape[-1])
    defaults = next(values for limit, values in SIZE_DEFAULTS if area <= limit)
    unset = {k: v for k, v in defaults.items() if hasattr(options, k) and getattr(options, k) is None}
    return dataclasses.replace(options, **unset) if unset else options


_HOOKABLE_CHECKED: set[tuple] = set()


def check_explain_options(options: ExplainOptions, name: str, cfg: Any, data: Any) -> None:
    """``Analysis.check`` of the attribution analyses: the images fit the test split and the Grad-CAM stage is
    one of the encoder's spatial stages. An encoder that Captum's layer hooks would misread (``check_hookable``)
    is refused only when Grad-CAM is asked for at a named stage; otherwise Grad-CAM is left out for it at
    compute time (the section says why) and the input-gradient methods, which hook no layer, still run."""
    options = sized_options(options, data.image_shape)
    check_image_count(options.images, data, f"analyses.{name}.images")
    wants_stage = bool(options.gradcam_stage) and "gradcam" in options.methods
    key = (repr(cfg.model), tuple(data.image_shape))
    if key in _HOOKABLE_CHECKED and not options.gradcam_stage:
        return
    encoder = build_encoder(cfg.model, data.image_shape, 0)
    try:
        check_hookable(encoder)
    except ConfigError:
        if wants_stage:
            raise
    _HOOKABLE_CHECKED.add(key)
    if options.gradcam_stage:
        check_stage(encoder, options.gradcam_stage, f"analyses.{name}.gradcam_stage")


def hook_problem(ctx: SeedContext) -> str | None:
    """Why Captum's layer hooks cannot read this seed's encoders (``check_hookable``), or None."""
    for encoder in ctx.encoders.values():
        try:
            check_hookable(encoder)
        except ConfigError as exc:
            return exc.problem
        return None
    return None


@dataclass
class ExplainSetup:
    """What an attribution analysis explains on a seed: the images (normalised), their labels and indices in
    the test split, the settings of the methods, and the models."""

    index: np.ndarray
    x: torch.Tensor
    y: torch.Tensor
    settings: Settings
    targets: list[Explained]
    methods: list[str]
    left_out: str | None = None  # why Grad-CAM is left out (an encoder Captum's layer hooks would misread)

    def applies(self, method: str, target: Explained) -> bool:
        return applies(method, target.model) and not (method in NEEDS_STAGE and self.left_out)


def explain_setup(ctx: SeedContext, options: ExplainOptions) -> ExplainSetup:
    data = ctx.data
    options = sized_options(options, data.image_shape)
    index = select_images(data.test_y.numpy(), options.images, ctx.cfg.data.split_seed)
    x = data.test_x[torch.from_numpy(index)].float()
    cache = ctx.memory("interpret")
    if cache.get("seed") != ctx.seed:  # one seed's copies at a time
        cache.clear()
        cache["seed"] = ctx.seed
        cache["baseline"] = mean_image(data.train_x)
        cache["targets"] = explained_targets(ctx)
        cache["maps"] = {}
        cache["left_out"] = hook_problem(ctx)
    settings = Settings(baseline=cache["baseline"], ig_steps=options.ig_steps,
                        internal_batch_size=options.internal_batch_size,
                        smoothgrad_samples=options.smoothgrad_samples, smoothgrad_noise=options.smoothgrad_noise,
                        stage=options.gradcam_stage or None)
    setup = ExplainSetup(index, x, data.test_y[torch.from_numpy(index)], settings, cache["targets"],
                         list(dict.fromkeys(options.methods)), cache["left_out"])
    if "gradcam" in setup.methods and not setup.left_out:
        setup.left_out = gradcam_problem(ctx, setup)
    return setup


def gradcam_problem(ctx: SeedContext, setup: ExplainSetup) -> str | None:
    """Why Grad-CAM cannot run at the setup's stage on this seed's encoders (no stage with a spatial map, a
    stage whose output is not one), or None: tried once on one image."""
    memo = ctx.memory("interpret").setdefault("gradcam_problem", {})
    key = setup.settings.stage
    if key not in memo:
        memo[key] = None
        target = next((t for t in setup.targets if t.encoder is not None), None)
        if target is not None:
            try:
                attribute("gradcam", target.model, setup.x[:1], setup.y[:1], setup.settings)
            except ConfigError as exc:
                memo[key] = exc.problem
    return memo[key]


def maps_for(ctx: SeedContext, setup: ExplainSetup, target: Explained, method: str) -> tuple[Attribution, float]:
    """The attribution of ``target`` by ``method`` on the setup's images, computed once per seed (kept in the
    run's memory for the other attribution analyses), and the seconds it took."""
    maps = ctx.memory("interpret").setdefault("maps", {})
    key = (target.name, method, setup.settings.key(), tuple(setup.index.tolist()))
    if key not in maps:
        started = time.perf_counter()
        maps[key] = (attribute(method, target.model, setup.x, setup.y, setup.settings, seed=ctx.seed),
                     time.perf_counter() - started)
    return maps[key]


def array_key(method: str, model: str) -> str:
    return f"map__{method}__{model.replace(':', '-')}"


@register_analysis("attributions")
class Attributions(Analysis):
    order = 92
    requires = ("probes",)  # the latent probes use the penalty the probes analysis chose
    Options = ExplainOptions

    def check(self, cfg: Any, data: Any, layers: list[str]) -> None:
        check_explain_options(self.options, self.name, cfg, data)

    def compute(self, ctx: SeedContext) -> dict[str, pd.DataFrame]:
        if not (ctx.first_seed or self.options.every_seed):
            return {}
        setup = explain_setup(ctx, self.options)
        arrays: dict[str, np.ndarray] = {"index": setup.index, "labels": setup.y.numpy(),
                                         "images": ctx.data.to_unit_range(setup.x).numpy(),
                                         "models": np.array([t.name for t in setup.targets]),
                                         "methods": np.array(setup.methods)}
        rows = []
        for target in setup.targets:
            for method in setup.methods:
                if not setup.applies(method, target):
                    continue
                att, seconds = maps_for(ctx, setup, target, method)
                arrays[array_key(method, target.name)] = att.maps.astype(np.float32)
                row = {"model": target.name, "seed": ctx.seed, "method": method, "images": len(setup.index),
                       "seconds": seconds}
                if att.delta is not None:  # IG's completeness: Σ attributions = F(x) − F(baseline), up to delta
                    delta = att.delta.detach().abs().cpu().double()
                    total = att.values.detach().flatten(1).sum(1).cpu().double()
                    change = (total - att.delta.detach().cpu().double()).abs()  # |F(x) − F(baseline)|
                    row["completeness_delta"] = float(delta.mean())
                    row["completeness_relative"] = float((delta / change.clamp_min(1e-12)).median())
                rows.append(row)
        if ctx.first_seed:
            stage = setup.settings.stage or next((default_stage(t.encoder) for t in setup.targets
                                                  if t.encoder is not None), None)
            arrays["gradcam_stage"] = np.array(stage or "")
            arrays["left_out"] = np.array(f"Grad-CAM is left out: {setup.left_out}" if setup.left_out else "")
        ctx.save("attributions", **arrays)
        return {"attributions": pd.DataFrame(rows)}

    def sections(self, run: RunArtifacts) -> list[Section]:
        arrays = run.first_arrays("attributions")
        if not arrays or "models" not in arrays or "images" not in arrays:
            return []
        models = order_models(run, [str(m) for m in arrays["models"]])
        methods = [str(m) for m in arrays.get("methods", np.array(list(METHODS))) if str(m) in METHODS]
        stage = str(arrays.get("gradcam_stage", np.array(""))) or None
        panels = [(m, {model: arrays[array_key(m, model)] for model in models if array_key(m, model) in arrays})
                  for m in methods]
        panels = [(m, maps) for m, maps in panels if maps]
        if not panels:
            return []
        names = run.dataset.get("class_names", [])
        labels = [str(names[int(v)]) if 0 <= int(v) < len(names) else str(int(v)) for v in arrays["labels"]]
        fig = maps_figure(arrays["images"], labels, panels, {m: model_label(run, m) for m in models}, stage)
        sized = sized_options(self.options, arrays["images"].shape[1:])
        caption = (f"{len(arrays['images'])} test images, their true class explained; Integrated Gradients from the "
                   f"dataset-mean image in {sized.ig_steps} steps, SmoothGrad over {sized.smoothgrad_samples} noisy "
                   "copies (per-image-size defaults unless set: analyses.attributions)"
                   + (f"; Grad-CAM at {stage}, upsampled bilinearly" if stage else "")
                   + ". The probe on raw pixels has no stage, so no Grad-CAM.")
        note = str(arrays.get("left_out", np.array("")))
        if note:
            caption += f" {note}."
        frame = run.csv("attributions")
        shown = None
        if frame is not None and "completeness_delta" in frame:
            ig = frame.dropna(subset=["completeness_delta"])
            if len(ig):
                means = ig.groupby("model", sort=False)[["completeness_delta", "completeness_relative"]].mean()
                means = means.reindex([m for m in order_models(run, list(means.index))])
                means.index = [model_label(run, m) for m in means.index]
                names = {"completeness_delta": "IG completeness |δ| (logit)",
                         "completeness_relative": "|δ| / |F(x) − F(mean image)| (median)"}
                shown = table(means.rename(columns=names)
                              .rename_axis("model").reset_index(), "attributions_completeness", run)
                caption += (" Table: how far Integrated Gradients' attributions fall short of summing to the logit's "
                            "change from the mean image (its completeness axiom), with its steps.")
        guide = GUIDE + ("" if self.options.every_seed else FIRST_SEED.format(name=self.name))
        return [Section("attributions", "Attributions: what each model looks at", guide,
                        figures=[figure(fig, "attributions", run)], table=shown, caption=caption)]


def _rgb(images: np.ndarray) -> np.ndarray:
    """N×C×H×W images in [0, 1] as N×H×W×3."""
    x = np.moveaxis(images, 1, -1)
    return np.repeat(x, 3, -1) if x.shape[-1] == 1 else x[..., :3]


def colour_maps(maps: np.ndarray) -> np.ndarray:
    """Signed maps (N×H×W), each scaled by its largest magnitude, as RGB on a diverging colour map."""
    top = np.abs(maps).reshape(len(maps), -1).max(1).reshape(-1, 1, 1)
    scaled = np.divide(maps, top, out=np.zeros_like(maps, dtype=np.float64), where=top > 0)
    return plt.get_cmap("bwr")((scaled + 1) / 2)[..., :3]


# each map is drawn this wide (inches); a method's maps wrap onto further rows past the page width, every row
# starting with the input images, and the models' names stand vertically under their columns (never overlapping)
MAP_CELL = 0.6


def maps_figure(images: np.ndarray, labels: list[str], panels: list[tuple[str, dict[str, np.ndarray]]],
                model_labels: dict[str, str], stage: str | None) -> Any:
    """One panel per method (wrapped onto several rows when there are many models): rows the test images,
    columns the input then each model's map."""
    n, h, w = len(images), images.shape[2], images.shape[3]
    pad = max(1, h // 8)
    per_row = max(1, int((PAGE_WIDTH - 1.4) / MAP_CELL) - 1)
    blocks = [(method, dict(list(maps.items())[lo:lo + per_row]), lo > 0)
              for method, maps in panels for lo in range(0, len(maps), per_row)]
    columns = max(len(maps) for _, maps, _ in blocks) + 1
    names = {m: textwrap.fill(model_labels.get(m, m), 16) for _, maps, _ in blocks for m in maps}
    longest = max((max(len(line) for line in v.splitlines()) for v in names.values()), default=5)
    below = 0.07 * longest + 0.1
    fig, axes = plt.subplots(len(blocks), 1, figsize=(min(PAGE_WIDTH, MAP_CELL * columns + 1.4),
                                                      len(blocks) * (MAP_CELL * n + 0.45 + below)), squeeze=False)
    inputs = _rgb(images)
    for ax, (method, maps, continued) in zip(axes[:, 0], blocks):
        cells = [inputs] + [colour_maps(m) for m in maps.values()]
        mosaic = np.ones((n * (h + pad) - pad, len(cells) * (w + pad) - pad, 3))
        for c, cell in enumerate(cells):
            for r in range(n):
                mosaic[r * (h + pad):r * (h + pad) + h, c * (w + pad):c * (w + pad) + w] = cell[r]
        ax.imshow(mosaic, interpolation="nearest")
        ax.set_xticks([(w + pad) * c + w / 2 for c in range(len(cells))], ["input"] + [names[m] for m in maps],
                      rotation=90, fontsize=7, linespacing=0.95)
        ax.set_yticks([(h + pad) * r + h / 2 for r in range(n)], labels, fontsize=7)
        title = LABELS.get(method, method) + (f" (at {stage})" if method == "gradcam" and stage else "")
        ax.set_title(title + (" (continued)" if continued else ""), fontsize=9)
        for spine in ax.spines.values():
            spine.set_visible(False)
        ax.tick_params(length=0)
    fig.tight_layout(pad=0.3)
    return fig
