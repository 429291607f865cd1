"""Sanity checks for saliency maps (Adebayo et al. 2018, "Sanity Checks for Saliency Maps"): does an
explanation change when what the model learned is destroyed?

Model parameter randomisation, two ways: *cascading*, from the top down — the probe (or the regime's own
head) first, then the latent layer, then each stage down to the first, cumulatively — and *independent*,
one layer at a time. A layer is re-initialised with its own ``reset_parameters`` (seeded per layer, so
the cascade and the independent test draw the same weights for it); a probe, which has no initialiser of
its own, gets Gaussian weights and intercepts with the fitted ones' standard deviations. Each randomised
model's maps are compared with the trained model's on the same images: Spearman rank correlation of the
maps' absolute values and of the signed maps, SSIM (``skimage.metrics.structural_similarity``'s, for a
stack of maps at once) and the Pearson correlation of HOG descriptors (``skimage.feature.hog``) of the
absolute maps, each scaled to [0, 1] by its maximum.

A method whose maps stay similar once every layer is randomised does not reflect what was learned
(``not_reflecting``): the threshold is a mean Spearman rank correlation of the absolute maps of
``THRESHOLD`` = 0.5 or more after full randomisation (Adebayo et al. show methods failing the check at
rank correlations well above that, and methods passing it falling near 0)."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
import copy
import zlib
from typing import Callable, Iterator

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from replearn.errors import ConfigError
from replearn.metrics.ranks import rankdata
from replearn.interpret.explain import encoder_of, seeded, stage_module

THRESHOLD = 0.5  # mean Spearman(|map|) after full randomisation at or above which a method is marked
METRICS = ("spearman_abs", "spearman", "ssim", "hog")
METRIC_LABELS = {"spearman_abs": "Spearman rank correlation (absolute)", "spearman": "Spearman rank correlation",
                 "ssim": "SSIM", "hog": "HOG similarity"}
PROBE = "probe"  # the name of the class-logit layer on top (a latent probe's weights, or a regime's own head)


def randomisable_layers(model: nn.Module) -> list[str]:
    """The layers of an explained model from the top down: the probe (or head), then every named layer of
    its encoder that a module produces, deepest first."""
    encoder = encoder_of(model)
    layers = [PROBE]
    for info in reversed(getattr(encoder, "feature_info", [])):
        try:
            stage_module(encoder, info.name)
        except ConfigError:
            continue
        layers.append(info.name)
    return layers


def _layer_seed(seed: int, layer: str) -> int:
    return (seed * 1_000_003 + zlib.crc32(layer.encode())) % (2 ** 63)


def _reset(module: nn.Module) -> None:
    for m in module.modules():
        reset = getattr(m, "reset_parameters", None)
        if callable(reset):
            reset()


def _randomise_probe(model: nn.Module) -> None:
    coef, intercept = getattr(model, "coef", None), getattr(model, "intercept", None)
    if isinstance(coef, torch.Tensor) and isinstance(intercept, torch.Tensor):  # a latent probe (ProbeLogits)
        with torch.no_grad():
            coef.copy_(torch.randn_like(coef) * coef.std())
            intercept.copy_(torch.randn_like(intercept) * (intercept.std() if intercept.numel() > 1 else 0.0))
        return
    head = getattr(model, "head", None)
    if not isinstance(head, nn.Module):
        raise ConfigError(f"a {type(model).__name__} has neither probe weights nor a head to randomise",
                          "explain a ProbeLogits or HeadLogits model")
    _reset(head)


def randomise_(model: nn.Module, layers: list[str], seed: int = 0) -> nn.Module:
    """Re-initialise ``layers`` (names from ``randomisable_layers``) of ``model`` in place and return it; each
    layer's draw depends only on ``seed`` and its name. The global random state is left as it was."""
    encoder = encoder_of(model)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    for layer in layers:
        with seeded(_layer_seed(seed, layer), device):
            if layer == PROBE:
                _randomise_probe(model)
            else:
                _reset(stage_module(encoder, layer))
    return model


def randomised(model: nn.Module, layers: list[str], seed: int = 0) -> nn.Module:
    """A copy of ``model`` with ``layers`` re-initialised (``randomise_``); ``model`` is left as it is."""
    return randomise_(copy.deepcopy(model), layers, seed).eval()


@contextlib.contextmanager
def restored(model: nn.Module) -> Iterator[nn.Module]:
    """``model``, whose parameters and buffers are put back as they were when the block ends."""
    saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
    try:
        yield model
    finally:
        model.load_state_dict(saved)


def _rowwise_corr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of each row of ``a`` with the same row of ``b``; 1 for two constant rows that are
    equal, 0 when only one is constant (nothing in common to correlate)."""
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    na, nb = np.sqrt((a * a).sum(1)), np.sqrt((b * b).sum(1))
    out = np.zeros(len(a))
    ok = (na > 1e-12) & (nb > 1e-12)
    out[ok] = (a[ok] * b[ok]).sum(1) / (na[ok] * nb[ok])
    out[(na <= 1e-12) & (nb <= 1e-12)] = 1.0
    return np.clip(out, -1.0, 1.0)


def _unit(maps: np.ndarray) -> np.ndarray:
    """Absolute maps, each scaled to [0, 1] by its maximum."""
    a = np.abs(maps).astype(np.float64)
    top = a.reshape(len(a), -1).max(1).reshape(-1, 1, 1)
    return np.divide(a, top, out=np.zeros_like(a), where=top > 0)


def _hog_geometry(height: int, width: int) -> tuple[int, int]:
    """Pixels per cell and cells per block of the HOG descriptor of an image of this size (four cells across
    the shorter side, blocks of 2×2 cells where they fit)."""
    side = min(height, width)
    cell = max(1, side // 4)
    return cell, 2 if side // cell >= 2 else 1


def _hog(image: np.ndarray) -> np.ndarray:
    """scikit-image's HOG of one image (9 orientations, L2-Hys blocks): the reference ``stacked_hog`` equals."""
    from skimage.feature import hog

    cell, block = _hog_geometry(*image.shape)
    return hog(image, orientations=9, pixels_per_cell=(cell, cell), cells_per_block=(block, block), feature_vector=True)


def stacked_hog(images: np.ndarray, orientations: int = 9) -> np.ndarray:
    """Per image of an N×H×W float stack, the HOG descriptor as scikit-image's ``hog`` computes it with
    ``_hog``'s settings (a test compares them), for every image at once: central-difference gradients (zero on
    the border rows and columns), unsigned orientations in ``orientations`` bins of 180°, each cell's mean
    magnitude per bin (scikit-image's float32 running sum, in its order, over the cell's area), and L2-Hys
    normalised blocks. One call per stack instead of one per image (the sanity checks prepare hundreds of maps
    per model), stepping through a cell's pixels for every image, cell and bin at once."""
    images = np.asarray(images, dtype=np.float64)
    n, height, width = images.shape
    cell, block = _hog_geometry(height, width)
    g_row = np.zeros_like(images)
    g_col = np.zeros_like(images)
    g_row[:, 1:-1, :] = images[:, 2:, :] - images[:, :-2, :]
    g_col[:, :, 1:-1] = images[:, :, 2:] - images[:, :, :-2]
    magnitude = np.hypot(g_col, g_row)
    orientation = np.arctan2(g_row, g_col) * (180 / np.pi) % 180
    edges = np.array([np.float32(180.0 / orientations * i) for i in range(orientations + 1)], dtype=np.float64)
    cells_row, cells_col = height // cell, width // cell
    # each pixel's bin (an orientation of exactly 180°, from the modulo of a tiny negative angle, is in none: the
    # spare last bin), its cells' pixels laid out as (row in cell, column in cell, image, cell row, cell column)
    bins = np.searchsorted(edges, orientation, side="right") - 1
    bins[(bins < 0) | (bins >= orientations)] = orientations

    def by_offset(values: np.ndarray) -> np.ndarray:
        inside = values[:, : cells_row * cell, : cells_col * cell].reshape(n, cells_row, cell, cells_col, cell)
        return np.ascontiguousarray(inside.transpose(2, 4, 0, 1, 3))

    magnitudes, bin_of = by_offset(magnitude), by_offset(bins)
    histogram = np.zeros(n * cells_row * cells_col * (orientations + 1), dtype=np.float32)
    base = np.arange(n * cells_row * cells_col).reshape(n, cells_row, cells_col) * (orientations + 1)
    for d_row in range(cell):  # scikit-image's order: a float32 running sum, row by row of the cell
        for d_col in range(cell):
            where = (base + bin_of[d_row, d_col]).ravel()
            histogram[where] = (histogram[where] + magnitudes[d_row, d_col].ravel()).astype(np.float32)
    histogram = histogram.reshape(n, cells_row, cells_col, orientations + 1)[..., :orientations]
    cells = (histogram / np.float32(cell * cell)).astype(np.float64)
    blocks_row, blocks_col = cells_row - block + 1, cells_col - block + 1
    if blocks_row <= 0 or blocks_col <= 0:
        raise ValueError(f"maps of {height}×{width} pixels are too small for a HOG descriptor")
    windows = np.stack(
        [cells[:, r : r + blocks_row, c : c + blocks_col] for r in range(block) for c in range(block)], axis=3
    ).reshape(n, blocks_row, blocks_col, block, block, orientations)
    eps = 1e-5
    out = windows / np.sqrt((windows**2).sum(axis=(3, 4, 5), keepdims=True) + eps**2)
    out = np.minimum(out, 0.2)
    out = out / np.sqrt((out**2).sum(axis=(3, 4, 5), keepdims=True) + eps**2)
    return out.reshape(n, -1)


@dataclass(frozen=True)
class PreparedMaps:
    """What ``similarity`` derives from one set of maps (N×H×W), computed once when the same maps are compared
    with many others (the trained model's maps with every randomised model's)."""

    maps: np.ndarray
    abs_ranks: np.ndarray
    ranks: np.ndarray
    unit: np.ndarray
    hog: np.ndarray


def prepare_maps(maps: np.ndarray | PreparedMaps) -> PreparedMaps:
    """The ranks of the absolute and of the signed maps, the absolute maps scaled to [0, 1], and their HOG."""
    if isinstance(maps, PreparedMaps):
        return maps
    flat = maps.reshape(len(maps), -1)
    unit = _unit(maps)
    return PreparedMaps(maps, rankdata(np.abs(flat), axis=1), rankdata(flat, axis=1), unit, hog_descriptors(unit))


# the largest cell (pixels a side) for which one call over the stack beats scikit-image per image: the stacked
# running sums step through a cell's pixels one at a time (15× faster at 8 px, 2× at 32 px, 1.3× at 96 px
# with 200 maps; 1.7× slower at 224 px)
STACKED_HOG_MAX_CELL = 24


def hog_descriptors(images: np.ndarray) -> np.ndarray:
    """The HOG descriptor of each image of an N×H×W stack (``stacked_hog``, or scikit-image per image for large
    cells, where that is faster: the two are equal)."""
    if _hog_geometry(*images.shape[1:])[0] <= STACKED_HOG_MAX_CELL:
        return stacked_hog(images)
    return np.stack([_hog(u) for u in images])


def similarity(reference: np.ndarray | PreparedMaps, maps: np.ndarray | PreparedMaps) -> dict[str, np.ndarray]:
    """Per image (N×H×W maps, or maps already prepared by ``prepare_maps``): Spearman rank correlation of the
    absolute and of the signed maps, SSIM and HOG similarity of the absolute maps scaled to [0, 1]."""
    ref, new = prepare_maps(reference), prepare_maps(maps)
    n = len(ref.maps)
    out = {"spearman_abs": _rowwise_corr(ref.abs_ranks, new.abs_ranks),
           "spearman": _rowwise_corr(ref.ranks, new.ranks)}
    side = min(ref.maps.shape[1:])
    win = min(7, side if side % 2 else side - 1)
    if win >= 3:
        out["ssim"] = stacked_ssim(ref.unit, new.unit, win)
    else:
        out["ssim"] = np.full(n, np.nan)
    out["hog"] = _rowwise_corr(ref.hog, new.hog)
    return out


def stacked_ssim(a: np.ndarray, b: np.ndarray, win: int) -> np.ndarray:
    """Per image of two N×H×W stacks with values in [0, 1], the mean structural similarity (Wang et al. 2004)
    as scikit-image's ``structural_similarity(data_range=1, win_size=win)`` computes it (a uniform window,
    sample covariance, the border of half a window left out), for every image at once (a test compares them)."""
    from scipy.ndimage import uniform_filter

    size = (1, win, win)  # the filter leaves the image axis alone
    ux, uy = uniform_filter(a, size), uniform_filter(b, size)
    uxx, uyy, uxy = uniform_filter(a * a, size), uniform_filter(b * b, size), uniform_filter(a * b, size)
    cov_norm = win**2 / (win**2 - 1)
    vx, vy, vxy = cov_norm * (uxx - ux * ux), cov_norm * (uyy - uy * uy), cov_norm * (uxy - ux * uy)
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    pad = (win - 1) // 2
    return s[:, pad : s.shape[1] - pad, pad : s.shape[2] - pad].mean(axis=(1, 2))


def randomisation_tests(model: nn.Module, maps_of: Callable[[nn.Module], np.ndarray], seed: int = 0,
                        reference: np.ndarray | None = None) -> pd.DataFrame:
    """Cascading and independent randomisation of ``model`` (a class-logit target; randomised in place and
    restored afterwards): one row per test and
    layer with the mean (over images) of every similarity in ``METRICS`` between ``maps_of(randomised
    model)`` and the trained model's maps (``reference``, else ``maps_of(model)``). ``step`` counts the
    layers randomised from the top (cascading) or is the layer's place from the top (independent)."""
    prepared = prepare_maps(maps_of(model) if reference is None else reference)
    layers = randomisable_layers(model)
    rows, by_layer = [], {}
    with restored(model):
        for step, layer in enumerate(layers, start=1):
            randomise_(model, [layer], seed)  # the layers above it are randomised already
            sims = similarity(prepared, maps_of(model))
            rows.append({"test": "cascading", "layer": layer, "step": step,
                         **{k: float(np.nanmean(v)) for k, v in sims.items()}})
            if step == 1:
                by_layer[layer] = sims  # the probe alone: the first cascading step is also its independent test
    for step, layer in enumerate(layers, start=1):
        sims = by_layer.get(layer)
        if sims is None:
            with restored(model):
                sims = similarity(prepared, maps_of(randomise_(model, [layer], seed)))
        rows.append({"test": "independent", "layer": layer, "step": step,
                     **{k: float(np.nanmean(v)) for k, v in sims.items()}})
    return pd.DataFrame(rows)


def not_reflecting(frame: pd.DataFrame, threshold: float = THRESHOLD, metric: str = "spearman_abs") -> pd.DataFrame:
    """Per method and model (the columns of ``frame`` other than the test's: rows of
    ``randomisation_tests`` with ``method`` and ``model`` columns), the similarity after full cascading
    randomisation and whether it stays at or above ``threshold`` — the method's maps do not reflect what the
    model learned. Mean Spearman rank correlation of the absolute maps ≥ 0.5 by default."""
    keys = [c for c in ("model", "method", "seed") if c in frame.columns]
    cascade = frame[frame.test == "cascading"].reset_index(drop=True)
    last = cascade.loc[cascade.groupby(keys, sort=False).step.idxmax()] if keys else cascade.nlargest(1, "step")
    out = last[keys + [metric]].rename(columns={metric: f"{metric}_fully_randomised"}).reset_index(drop=True)
    out["not_reflecting"] = out[f"{metric}_fully_randomised"] >= threshold
    return out


# ------------------------------------------------------------------ the null floor and the verdict against it
INPUT_MULTIPLIED = ("integrated_gradients", "gradient_x_input")  # maps = something × (input − baseline)
INPUT_FREE = "spearman_input_free"
NULL_METRICS = (*METRICS, INPUT_FREE)
MARGIN = 0.1  # how far above the random-vs-random floor a trained-vs-random similarity must be to fail


def input_free_spearman(reference: np.ndarray, maps: np.ndarray, divisor: np.ndarray) -> np.ndarray:
    """Per image, the Spearman rank correlation of the signed maps divided by ``divisor`` (the input minus the
    method's baseline, summed over channels, N×H×W), over the pixels where the divisor is not ~0: for a method
    that multiplies by the input this compares what multiplies it (IG's path-averaged gradient, the plain
    gradient), which the input's own structure cannot dominate."""
    out = np.full(len(reference), np.nan)
    scale = np.abs(divisor).reshape(len(divisor), -1).max(1)
    for i in range(len(reference)):
        keep = np.abs(divisor[i]).ravel() > 1e-3 * max(float(scale[i]), 1e-12)
        if keep.sum() < 3:
            continue
        a = reference[i].ravel()[keep] / divisor[i].ravel()[keep]
        b = maps[i].ravel()[keep] / divisor[i].ravel()[keep]
        out[i] = _rowwise_corr(rankdata(a)[None], rankdata(b)[None])[0]
    return out


def null_draw_seed(seed: int, draw: int, which: int) -> int:
    """The seed of one full randomisation: draw ``draw``'s first (``which`` 0) or second (1) random model."""
    return (seed * 7_919 + draw * 104_729 + which * 1_299_709 + 1) % (2 ** 63)


def null_floor(model: nn.Module, maps_of: Callable[[nn.Module], np.ndarray], reference: np.ndarray,
               draws: int = 3, seed: int = 0, divisor: np.ndarray | None = None) -> pd.DataFrame:
    """``draws`` pairs of independent full randomisations of ``model`` (every layer of ``randomisable_layers``,
    probe or head included; the model is restored): per draw, each metric of ``NULL_METRICS`` (mean over images)
    between the trained maps (``reference``) and the first random model's (``trained_vs_random``), and between
    the two random models' (``random_vs_random``: the floor — what the metric gives for two models that share
    nothing learned). ``divisor`` (input − baseline) adds the input-free Spearman; NaN without it."""
    layers = randomisable_layers(model)
    trained = prepare_maps(reference)
    rows = []
    for draw in range(draws):
        pair = []
        for which in (0, 1):
            with restored(model):
                pair.append(prepare_maps(maps_of(randomise_(model, layers, null_draw_seed(seed, draw, which)))))
        for kind, (a, b) in (("trained_vs_random", (trained, pair[0])), ("random_vs_random", (pair[0], pair[1]))):
            sims = similarity(a, b)
            sims[INPUT_FREE] = (input_free_spearman(a.maps, b.maps, divisor) if divisor is not None
                                else np.full(len(a.maps), np.nan))
            rows.append({"kind": kind, "draw": draw, **{k: float(np.nanmean(v)) if np.isfinite(v).any() else np.nan
                                                        for k, v in sims.items()}})
    return pd.DataFrame(rows)


def verdict_metric(method: str) -> str:
    """The metric a method's verdict rests on: for a method that multiplies by the input, the input-free Spearman
    (the absolute map's ranking is dominated by the input, whatever the weights); else the absolute Spearman."""
    return INPUT_FREE if method in INPUT_MULTIPLIED else "spearman_abs"


def verdicts(null: pd.DataFrame, margin: float = MARGIN) -> pd.DataFrame:
    """Per model and method (rows of ``null_floor`` with ``model`` and ``method`` columns): for every metric the
    trained-vs-random and random-vs-random means over draws with their range, and the verdict on the method's
    ``verdict_metric``: the maps do not reflect what was learned when the trained maps survive randomisation
    better than a random model's survive another randomisation (trained-vs-random above the floor by more than
    ``margin``), or when the maps do not depend on the weights at all (floor above 1 − ``margin``). Passing is
    necessary, not sufficient: a map can change with the weights and still say little about the model."""
    rows = []
    for (model, method), g in null.groupby(["model", "method"], sort=False):
        row: dict[str, object] = {"model": model, "method": method, "draws": int(g.draw.nunique())}
        for metric in NULL_METRICS:
            for kind in ("trained_vs_random", "random_vs_random"):
                values = g.loc[g.kind == kind, metric].dropna()
                row[f"{metric}__{kind}"] = float(values.mean()) if len(values) else np.nan
                row[f"{metric}__{kind}__min"] = float(values.min()) if len(values) else np.nan
                row[f"{metric}__{kind}__max"] = float(values.max()) if len(values) else np.nan
        metric = verdict_metric(method)
        trained, floor = row[f"{metric}__trained_vs_random"], row[f"{metric}__random_vs_random"]
        row["verdict_metric"] = metric
        row["above_floor"] = float(trained) - float(floor)  # type: ignore[arg-type]
        row["weight_independent"] = bool(float(floor) > 1 - margin)  # type: ignore[arg-type]
        row["not_reflecting"] = bool(row["above_floor"] > margin or row["weight_independent"])  # type: ignore[operator]
        rows.append(row)
    return pd.DataFrame(rows)


def input_divisor(method: str, x: torch.Tensor, baseline: torch.Tensor | None) -> np.ndarray | None:
    """What an input-multiplied method multiplies by, summed over channels (N×H×W): x − baseline for Integrated
    Gradients (``baseline``: its reference image, zeros when None), x for gradient × input; None for the others."""
    if method not in INPUT_MULTIPLIED:
        return None
    x = x.detach().double().cpu()
    if method == "integrated_gradients" and baseline is not None:
        x = x - baseline.detach().double().cpu().expand_as(x)
    return x.sum(1).numpy()
