"""A run's cost model: each phase's time and peak memory predicted from the data's shape, the encoder's FLOPs
and the machine's measured matrix-multiply rate, before anything is written (``plan_run``), so that preflight
can print the plan and refuse what cannot fit in memory, and the run's ETA can cover the analyses and the
report (``RunClock.plan_analyses``).

Each analysis's cost is a ``Cost``: matrix work (FLOPs at the matmul rate), encoder passes (forward-pass
equivalents at the rate training reaches, a backward counting two) and a fixed overhead, registered per
analysis name with ``analysis_cost``; an analysis without one is predicted from ``DEFAULT_COST``. The
constants are rough (a factor of two either way, measured on digits and on 32–224 px synthetic images by
``benchmarks/bench_research_scale.py``); the ETA corrects them by the ratio of measured to predicted time of
the analyses already done.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from replearn.metrics.pca import pca_method

# a conv net's training and inference on CPU reach about this fraction of the matmul rate (measured: 0.2–0.4)
ENCODER_EFFICIENCY = 0.3
# the rate of float64 matrix work (eigh, TwoNN's distances) relative to float32 matmuls
FLOAT64_SLOWDOWN = 2.0
# average L-BFGS iterations of a linear-probe fit (capped at analysis.probe_max_iter)
PROBE_ITERATIONS = 20
# bytes per second that saving float arrays compressed (np.savez_compressed) reaches
COMPRESS_RATE = 3e6
# fixed seconds per training step (optimiser, data loading, callbacks: what a tiny model's steps cost)
TRAIN_STEP_SECONDS = 0.01
# seconds per report figure and per written format (PNG drawn once, then SVG and PDF; measured on digits)
FIGURE_SECONDS, FORMAT_SECONDS = 0.3, 0.1  # PNG drawn and encoded; each SVG/PDF copy (in the workers)


@dataclass(frozen=True)
class RunShape:
    """What the cost model knows about a run: image and split sizes of the analysed data, the models and their
    layers, and the encoder's forward FLOPs per image."""

    train: int
    val: int
    test: int
    image_shape: tuple[int, int, int]
    classes: int
    regimes: int
    layers: int  # layers per encoder, input excluded
    latent: int
    forward_flops: float  # one image through the encoder
    analysis: Any  # the AnalysisConfig
    analyses_options: dict[str, Any] = field(default_factory=dict)  # analyses.<name> as run

    @property
    def pixels(self) -> int:
        return math.prod(self.image_shape)

    @property
    def images(self) -> int:
        return self.train + self.val + self.test

    @property
    def encoders(self) -> int:
        """Encoders analysed per seed: every regime and the random-init encoder."""
        return self.regimes + 1

    @property
    def points(self) -> int:
        return min(self.test, self.analysis.analysis_points)

    @property
    def layer_features(self) -> int:
        """Features of a typical encoder layer (stage maps are pooled to at most max_stage_features)."""
        return min(self.analysis.max_stage_features, max(self.latent, self.pixels))

    def option(self, analysis: str, key: str, default: Any) -> Any:
        value = (self.analyses_options.get(analysis) or {}).get(key)
        return default if value is None else value


@dataclass
class Cost:
    """Predicted work of a phase: ``flops`` of matrix work, ``passes`` of the encoder over one image (forward
    equivalents), ``seconds`` of fixed overhead, and ``bytes`` of peak memory beyond what the run holds."""

    flops: float = 0.0
    passes: float = 0.0
    seconds: float = 0.0
    bytes: float = 0.0
    fix: str = ""  # the option that bounds it, named when it cannot fit

    def time(self, shape: RunShape, rate: float) -> float:
        """Seconds at ``rate`` FLOP/s of float32 matmul."""
        return (self.seconds + self.flops / rate
                + self.passes * shape.forward_flops / (rate * ENCODER_EFFICIENCY))


ANALYSIS_COSTS: dict[str, Callable[[RunShape], Cost]] = {}
DEFAULT_COST = Cost(seconds=0.1)  # e.g. the analyses that only draw report sections


def analysis_cost(name: str) -> Callable[[Callable[[RunShape], Cost]], Callable[[RunShape], Cost]]:
    """Register the cost of the analysis called ``name`` (a function of the run's shape)."""
    def add(fn: Callable[[RunShape], Cost]) -> Callable[[RunShape], Cost]:
        ANALYSIS_COSTS[name] = fn
        return fn

    return add


def pca_cost(n: int, d: int, q: int) -> Cost:
    """Work and memory of ``pca.principal_components`` on n×d data."""
    method = pca_method(n, d)
    if method == "covariance":
        return Cost(flops=FLOAT64_SLOWDOWN * (2 * n * d * d + 10 * d ** 3), bytes=3 * d * d * 8)
    if method == "gram":
        return Cost(flops=FLOAT64_SLOWDOWN * (4 * n * n * d + 10 * n ** 3), bytes=n * n * 8 + n * min(d, 8192) * 16
                    + d * q * 8)
    rank = q + 16
    return Cost(flops=2 * 14 * n * d * rank, bytes=3 * (n + d) * rank * 4)


def extraction_cost(shape: RunShape) -> Cost:
    """Features of every encoder for every analysed image, and the PCA baseline."""
    pca = pca_cost(shape.train, shape.pixels, shape.latent)
    return Cost(flops=pca.flops, passes=shape.encoders * shape.images, bytes=pca.bytes, seconds=0.2 * shape.encoders,
                fix="data.image_size (pixels per image) or analysis.max_images_per_split")


def _layer_dims(shape: RunShape) -> list[int]:
    """Feature counts of the probed layers of one seed: raw pixels, PCA, and each encoder's layers."""
    return [shape.pixels, shape.latent] + [shape.layer_features] * (shape.encoders * shape.layers) \
        + [shape.latent] * shape.encoders


@analysis_cost("probes")
def _probes(shape: RunShape) -> Cost:
    a = shape.analysis
    grid = len(a.probe_l2_grid)
    evaluated = sum(min(n, a.knn_eval_points or n) for n in (shape.val, shape.test))
    flops = sum(grid * PROBE_ITERATIONS * 4 * shape.train * d * shape.classes + 2 * evaluated * shape.train * d
                for d in _layer_dims(shape))
    return Cost(flops=flops, seconds=0.1 * len(_layer_dims(shape)),  # the neighbour search is chunked
                bytes=2 * shape.train * shape.pixels * 4 + min(evaluated, 2048) * shape.train * 4)


@analysis_cost("label_efficiency")
def _label_efficiency(shape: RunShape) -> Cost:
    a = shape.analysis
    fits = (len(a.label_counts) + 1) * (shape.encoders + 2)  # the draws of one label count are fitted together
    dims = shape.latent * (shape.encoders + 1) + shape.pixels  # every final layer; the raw pixels' is the input
    few = sum(min(c * shape.classes, shape.train) for c in a.label_counts) * a.label_draws
    return Cost(flops=PROBE_ITERATIONS * 4 * len(a.probe_l2_grid) * (shape.train + few) * dims * shape.classes,
                seconds=0.07 * fits)


@analysis_cost("projection")
def _projection(shape: RunShape) -> Cost:
    n = min(shape.test, shape.analysis.projection_points)
    if n == 0:
        return Cost()
    pixels = pca_cost(n, shape.pixels, 50)
    per_model = 2 * n * n * 50 + 200 * n * 15 * 60  # neighbour search, then 200 epochs over the edges
    return Cost(flops=pixels.flops + (shape.encoders + 2) * per_model + 2 * n * n * shape.pixels,
                seconds=0.4 * (shape.encoders + 2), bytes=pixels.bytes + n * shape.pixels * 4,
                fix="analysis.projection_points")


@analysis_cost("dimensions")
def _dimensions(shape: RunShape) -> Cost:
    m, t = shape.points, min(shape.points, shape.analysis.twonn_points)
    flops = sum(FLOAT64_SLOWDOWN * (2 * m * d * min(m, d) + 10 * min(m, d) ** 3 + 2 * t * t * d)
                for d in _layer_dims(shape))
    return Cost(flops=flops, seconds=0.02 * len(_layer_dims(shape)),
                bytes=m * shape.pixels * 8 * 2 + m * m * 8, fix="analysis.analysis_points")


@analysis_cost("similarity")
def _similarity(shape: RunShape) -> Cost:
    m, b = shape.points, shape.analysis.cka_batch_size
    dims = _layer_dims(shape)
    grams = sum(2 * m * min(b, m) * d for d in dims)
    pairs = len(dims) ** 2 * m * min(b, m) * 4
    return Cost(flops=grams + pairs, seconds=0.2, bytes=len(dims) * min(b, m) ** 2 * 4 * 4,
                fix="analysis.analysis_points")


@analysis_cost("structure")
def _structure(shape: RunShape) -> Cost:
    m = shape.points
    dims = shape.latent * (shape.encoders + 1) + shape.pixels
    kmeans = 4 * 300 * 2 * m * shape.classes * dims  # 4 starts of Lloyd iterations, with scikit-learn's overhead
    return Cost(flops=kmeans + 2 * m * m * dims * 3, seconds=0.1 * (shape.encoders + 2), bytes=m * m * 4 * 2,
                fix="analysis.analysis_points")


@analysis_cost("inspection")
def _inspection(shape: RunShape) -> Cost:
    queries, neighbours = shape.option("inspection", "queries", 6), shape.option("inspection", "neighbours", 5)
    dims = shape.latent * (shape.encoders + 1) + shape.pixels
    saved = (shape.encoders + 2) * queries * neighbours * shape.pixels * 4  # neighbour images, compressed
    return Cost(flops=2 * queries * shape.train * dims, seconds=0.2 + saved / COMPRESS_RATE)


def _explain_settings(shape: RunShape, name: str) -> dict[str, int]:
    from replearn.analyses.attributions import SIZE_DEFAULTS

    area = shape.image_shape[-2] * shape.image_shape[-1]
    defaults = next(values for limit, values in SIZE_DEFAULTS if area <= limit)
    return {k: shape.option(name, k, v) for k, v in defaults.items()}


def _targets(shape: RunShape) -> int:
    """Models the attribution analyses explain: each regime through its probe and its head, the random-init
    encoder, the pixel probe."""
    return 2 * shape.regimes + 2


@analysis_cost("attributions")
def _attributions(shape: RunShape) -> Cost:
    s = _explain_settings(shape, "attributions")
    per_image = 3 * (s["ig_steps"] + s["smoothgrad_samples"] + 2)
    return Cost(passes=_targets(shape) * s["images"] * per_image, seconds=0.5)


@analysis_cost("sanity")
def _sanity(shape: RunShape) -> Cost:
    s = _explain_settings(shape, "sanity")
    images, ig = shape.option("sanity", "images", 4), shape.option("sanity", "ig_steps", 8)
    per_image = 3 * (ig + s["smoothgrad_samples"] + 2)
    return Cost(passes=2 * shape.regimes * (shape.layers + 2) * images * per_image, seconds=1.0)


@analysis_cost("faithfulness")
def _faithfulness(shape: RunShape) -> Cost:
    s = _explain_settings(shape, "faithfulness")
    curves = _targets(shape) * 5 * 2 * (s["steps"] + 1) * s["images"]
    explain = 3 * (s["ig_steps"] + s["smoothgrad_samples"] + 2)
    # the re-run methods evaluate their steps and samples in batches: about a quarter of the passes' cost each
    perturbed = _targets(shape) * 4 * s["images"] * (s["infidelity_samples"]
                                                     + 0.25 * s["sensitivity_samples"] * explain)
    return Cost(passes=curves + perturbed, seconds=0.5)


@analysis_cost("robustness")
def _robustness(shape: RunShape) -> Cost:
    images = shape.option("robustness", "images", 0) or min(shape.test, 1000)
    corruptions = len(shape.option("robustness", "corruptions", [None] * 6))
    severities = len(shape.option("robustness", "severities", [1, 2, 3]))
    return Cost(passes=shape.encoders * images * corruptions * severities, seconds=0.5)


@analysis_cost("units")
def _units(shape: RunShape) -> Cost:
    steps = shape.option("units", "steps", 48)
    channels = shape.option("units", "channels", 2)
    return Cost(passes=shape.encoders * shape.layers * (channels * steps * 3 + min(shape.test, 5000)), seconds=0.5)


@analysis_cost("invariance")
def _invariance(shape: RunShape) -> Cost:
    images = shape.option("invariance", "images", 0) or min(shape.test, 200)
    return Cost(passes=shape.encoders * images * 6, seconds=0.3)


def analysis_seconds(names: list[str], shape: RunShape, rate: float) -> dict[str, float]:
    """Predicted seconds of each named analysis on one seed."""
    return {name: ANALYSIS_COSTS.get(name, lambda _s: DEFAULT_COST)(shape).time(shape, rate) for name in names}


def render_seconds(figures: int, formats: int) -> float:
    """Predicted seconds to render the report's ``figures`` figures in ``formats`` files each."""
    return figures * (FIGURE_SECONDS + FORMAT_SECONDS * max(0, formats - 1))


def report_figures(shape: RunShape, analyses: list[str]) -> int:
    """About how many figures the report draws: about one per analysis, and one per regime for its
    reconstructions (the digits default: 20 analyses, 2 regimes, 19 figures)."""
    return len(analyses) + shape.regimes


_RATE: float | None = None


def matmul_rate(size: int = 512, repeats: int = 9) -> float:
    """This machine's float32 matrix-multiply rate now (FLOP/s, the median of ``repeats``: on a shared machine
    the best one catches a moment with a free core and put the ETA 3× too low; measured once per process,
    ≈ 0.1 s)."""
    global _RATE
    if _RATE is None:
        a, b = torch.randn(size, size), torch.randn(size, size)
        a @ b
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - started)
        _RATE = 2 * size ** 3 / max(sorted(times)[len(times) // 2], 1e-9)
    return _RATE


TRAINING, REPORT = "train", "render"  # the phases around the analyses (names no analysis has)


@dataclass
class Phase:
    name: str
    seconds: float
    bytes: float
    fix: str = ""


@dataclass
class Workload:
    """How much a run trains and renders: its training images, epochs, seeds, batch size and figure formats."""
    train_images: int
    epochs: int
    seeds: int
    batch_size: int = 64
    formats: int = 1


def plan_run(shape: RunShape, analyses: list[str], work: Workload, rate: float, held_bytes: float,
             train_bytes: float) -> list[Phase]:
    """Each phase's predicted time (all seeds) and peak memory: training, extraction, each analysis, the
    report. ``held_bytes``: what the run holds throughout (images and analysed features); ``train_bytes``:
    training's own peak (parameters, optimiser state, a batch's activations)."""
    train_images, epochs, seeds, batch_size = work.train_images, work.epochs, work.seeds, work.batch_size
    formats = work.formats
    train_passes = 3 * train_images * epochs * shape.regimes * seeds
    steps = math.ceil(train_images / batch_size) * epochs * shape.regimes * seeds
    phases = [Phase(TRAINING, Cost(passes=train_passes, seconds=steps * TRAIN_STEP_SECONDS).time(shape, rate),
                    held_bytes + train_bytes,
                    "train.batch_size or model.channels")]
    extraction = extraction_cost(shape)
    phases.append(Phase("extraction", seeds * extraction.time(shape, rate), held_bytes + extraction.bytes,
                        extraction.fix))
    for name in analyses:
        cost = ANALYSIS_COSTS.get(name, lambda _s: DEFAULT_COST)(shape)
        phases.append(Phase(name, seeds * cost.time(shape, rate), held_bytes + cost.bytes,
                            cost.fix or f"analysis.skip: [{name}]"))
    phases.append(Phase(REPORT, render_seconds(report_figures(shape, analyses), formats), held_bytes))
    return phases


def format_bytes(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"
