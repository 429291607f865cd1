"""Figures for the report: each function takes tables or arrays and returns a matplotlib Figure.

Every figure is at most ``PAGE_WIDTH`` inches wide and drawn with 9–11 pt text, so that shown at its
natural size in the report (``DPI`` pixels per inch, narrower than the page) no text is smaller than 9 pt;
the same figure is also written as SVG and PDF for a paper (``analyses/render.py``, ``analyses/exports.py``).
"""
from __future__ import annotations

import importlib
from typing import Any

import numpy as np
import pandas as pd

# The figure writers (``replearn.rundir.figure_files``) are the analyses' API here too, and matplotlib is
# imported on first use: a run's own process and its second training process then start without it (0.4 s
# each), since the report's sections are drawn by the drawing process (``report/predraw.py``).
FIGURE_FILES_NAMES = ("DPI", "plain_number", "png_and_bbox", "to_bytes", "vector_worker", "write_figure_vectors",
                      "write_vector_copies")


class _Pyplot:
    """``matplotlib.pyplot`` in the house style (``figure_files`` sets it), imported on first use."""

    def __getattr__(self, name: str) -> Any:
        return getattr(importlib.import_module("replearn.rundir.figure_files").plt, name)


plt: Any = _Pyplot()


def __getattr__(name: str) -> Any:
    if name in FIGURE_FILES_NAMES:
        return getattr(importlib.import_module("replearn.rundir.figure_files"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


PAGE_WIDTH = 10.5  # inches: 1,155 px at DPI, inside the report's 1,180 px column

Styles = dict[str, tuple[str, str]]  # model name -> (label, colour)


def _label(styles: Styles, model: str) -> str:
    return styles.get(model, (model, "#7f7f7f"))[0]


def _color(styles: Styles, model: str) -> str:
    return styles.get(model, (model, "#7f7f7f"))[1]


def _grid(n: int, height: float, columns: int = 3, width: float = PAGE_WIDTH) -> tuple[plt.Figure, list[plt.Axes]]:
    """``n`` panels in rows of at most ``columns``, the whole figure ``width`` wide."""
    cols = min(columns, max(1, n))
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(width if cols > 1 else min(width, 6.0), height * rows),
                             squeeze=False)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _legend_below(fig: plt.Figure, axes: list[plt.Axes], columns: int = 4) -> None:
    """One legend for the whole figure, under the panels, from the first panel's entries."""
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(columns, len(handles)), frameon=False)


def _finish(fig: plt.Figure, legend_rows: int = 0) -> plt.Figure:
    """Lay the panels out, leaving room under them for a figure legend of ``legend_rows`` rows."""
    bottom = min(0.45, (0.28 * legend_rows + 0.08) / fig.get_figheight()) if legend_rows else 0
    fig.tight_layout(rect=(0, bottom, 1, 1))
    return fig


def _plain_log_ticks(axis: Any) -> None:
    """Log-scale ticks written as plain numbers (6, 10, 40) instead of 4×10¹."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    from replearn.rundir.figure_files import plain_number

    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(plain_number))
    axis.set_minor_formatter(NullFormatter())


def _epoch_axis(ax: plt.Axes, epochs: list[int]) -> None:
    """Whole-epoch ticks; one epoch: its points, larger, on the epoch's own tick (not a line over fractional
    ticks, whose labels would run into each other)."""
    ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    if len(epochs) == 1:
        for line in ax.get_lines():
            line.set_markersize(7)
        ax.set_xticks(epochs)
        ax.set_xlim(epochs[0] - 1, epochs[0] + 1)


def training_curves(histories: dict[str, pd.DataFrame], styles: Styles) -> plt.Figure:
    """Per regime, mean over seeds: training loss relative to its first epoch, and the validation
    accuracy of the per-epoch latent linear probe."""
    fig, axes = plt.subplots(1, 2, figsize=(PAGE_WIDTH, 3.8))
    for regime, frame in histories.items():
        mean = frame.groupby("epoch").mean(numeric_only=True)
        color, label = _color(styles, regime), _label(styles, regime)
        first = mean["train_loss"].iloc[0]
        if np.isfinite(first) and first != 0:
            axes[0].plot(mean.index, mean["train_loss"] / first, "-o", ms=3, color=color, label=label)
        if "val_latent_probe_accuracy" in mean:
            axes[1].plot(mean.index, mean["val_latent_probe_accuracy"], "-o", ms=3, color=color, label=label)
    axes[0].set(title="training loss ÷ its first-epoch value", xlabel="epoch")
    axes[1].set(title="latent linear probe (validation)", xlabel="epoch", ylabel="accuracy")
    epochs = sorted({int(e) for frame in histories.values() for e in frame["epoch"]})
    for ax in axes:
        _epoch_axis(ax, epochs)
        ax.grid(alpha=0.3)
    _legend_below(fig, list(axes), columns=4)
    return _finish(fig, legend_rows=(len(histories) + 3) // 4)


def accuracy_by_depth(probes: pd.DataFrame, layer_order: list[str], styles: Styles) -> plt.Figure:
    """Probe test accuracy against depth, one panel per probe (linear, kNN), one line per model; a model with
    a single layer (raw pixels, PCA) is a horizontal line; bands span the seeds."""
    kinds = [k for k in ("linear", "knn") if k in set(probes.probe)]
    fig, axes = plt.subplots(1, len(kinds), figsize=(PAGE_WIDTH, 4.0), sharey=True, squeeze=False)
    axes = list(axes[0])
    x_of = {name: i for i, name in enumerate(layer_order)}
    for ax, kind in zip(axes, kinds):
        for model, group in probes[probes.probe == kind].groupby("model", sort=False):
            stats = group.groupby("layer").test_accuracy.agg(["mean", "min", "max"])
            stats = stats.loc[[layer for layer in layer_order if layer in stats.index]]
            color, label = _color(styles, model), _label(styles, model)
            if len(stats) == 1:
                ax.axhline(stats["mean"].iloc[0], color=color, ls=":", lw=1.5, label=label)
                continue
            xs = [x_of[layer] for layer in stats.index]
            ax.plot(xs, stats["mean"], "-o", ms=4, color=color, label=label)
            if (stats["max"] > stats["min"]).any():
                ax.fill_between(xs, stats["min"], stats["max"], color=color, alpha=0.12)
        ax.set_xticks(range(len(layer_order)), layer_order)
        ax.set(xlabel="layer (input → latent)", title=f"{'linear' if kind == 'linear' else 'kNN'} probe")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy")
    _legend_below(fig, axes, columns=4)
    return _finish(fig, legend_rows=(probes.model.nunique() + 3) // 4)


def projection_panels(coords: dict[str, np.ndarray], labels: np.ndarray, class_names: list[str],
                      titles: dict[str, str]) -> plt.Figure:
    """One 2-D scatter per model, coloured by class, four to a row, with a shared legend."""
    fig, axes = _grid(len(coords), 2.9, columns=4)
    cmap = plt.get_cmap("tab10" if len(class_names) <= 10 else "tab20")
    for ax, (model, xy) in zip(axes, coords.items()):
        ax.scatter(xy[:, 0], xy[:, 1], c=labels, cmap=cmap, vmin=-0.5, vmax=cmap.N - 0.5, s=2, alpha=0.7,
                   linewidths=0, rasterized=True)
        ax.set_title(titles.get(model, model))
        ax.set_xticks([])
        ax.set_yticks([])
        ax.spines[["left", "bottom"]].set_visible(False)
    handles = [plt.Line2D([], [], ls="", marker="o", color=cmap(i), label=name) for i, name in enumerate(class_names)]
    fig.legend(handles=handles, loc="lower center", ncol=min(5, len(class_names)), frameon=False)
    return _finish(fig, legend_rows=(len(class_names) + 4) // 5)


def _mosaic(rows: list[np.ndarray], pad_value: float = 1.0) -> tuple[np.ndarray, int, int]:
    """Rows of images (N×C×H×W in [0, 1]) tiled into one RGB array, with the tile height and padding."""
    n = max(len(r) for r in rows)
    h, w = rows[0].shape[2:]
    pad = max(1, h // 14)
    mosaic = np.full((len(rows) * (h + pad) - pad, n * (w + pad) - pad, 3), pad_value, dtype=np.float32)
    for r, images in enumerate(rows):
        for i, img in enumerate(images):
            tile = np.repeat(img[:1], 3, axis=0) if img.shape[0] == 1 else img[:3]
            y, x = r * (h + pad), i * (w + pad)
            mosaic[y:y + h, x:x + w] = np.transpose(tile, (1, 2, 0))
    return mosaic.clip(0, 1), h, pad


def image_grid(rows: list[np.ndarray], row_labels: list[str], cell: float = 0.6) -> plt.Figure:
    """Images (N×C×H×W in [0, 1], grey or RGB) in labelled rows, e.g. inputs above their reconstructions,
    drawn as one mosaic with a single ``imshow``."""
    n = max(len(r) for r in rows)
    mosaic, h, pad = _mosaic(rows)
    image_width = min(PAGE_WIDTH - 2.4, cell * n)
    fig, ax = plt.subplots(figsize=(image_width + 2.4, image_width * mosaic.shape[0] / mosaic.shape[1] + 0.3))
    ax.imshow(mosaic, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([(h + pad) * r + h / 2 for r in range(len(rows))], row_labels)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.tick_params(length=0)
    fig.tight_layout(pad=0.2)
    return fig


def neighbours_figure(queries: list[tuple[np.ndarray, str, list[tuple[str, np.ndarray]]]]) -> plt.Figure:
    """Nearest neighbours as a grid of panels, one per test image: its first row is the query, then one
    row per model with its nearest training images; two panels side by side."""
    fig, axes = _grid(len(queries), 0.52 * (len(queries[0][2]) + 1) + 0.4, columns=2)
    for ax, (image, title, rows) in zip(axes, queries):
        mosaic, h, pad = _mosaic([image[None]] + [r for _, r in rows])
        ax.imshow(mosaic, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([(h + pad) * r + h / 2 for r in range(len(rows) + 1)], ["query"] + [label for label, _ in rows])
        ax.set_title(title)
        for spine in ax.spines.values():
            spine.set_visible(False)
        ax.tick_params(length=0)
    fig.tight_layout()
    return fig


def _by_depth_lines(ax: plt.Axes, frame: pd.DataFrame, column: str, layer_order: list[str], styles: Styles) -> None:
    x_of = {name: i for i, name in enumerate(layer_order)}
    for model, group in frame.groupby("model", sort=False):
        stats = group.groupby("layer")[column].agg(["mean", "min", "max"])
        stats = stats.loc[[layer for layer in layer_order if layer in stats.index]]
        xs = [x_of[layer] for layer in stats.index]
        ax.plot(xs, stats["mean"], "-o" if len(xs) > 1 else "D", ms=4, color=_color(styles, model),
                label=_label(styles, model))
        if (stats["max"] > stats["min"]).any():
            ax.fill_between(xs, stats["min"], stats["max"], color=_color(styles, model), alpha=0.12)
    ax.set_xticks(range(len(layer_order)), layer_order, rotation=30)
    ax.grid(alpha=0.3)


def dimension_by_depth(dims: pd.DataFrame, layer_order: list[str], styles: Styles) -> plt.Figure:
    """PCA-90% dimension, participation ratio and TwoNN intrinsic dimension against depth, per model."""
    fig, axes = plt.subplots(1, 3, figsize=(PAGE_WIDTH, 3.8))
    titles = {"pca90": "components for 90% variance", "participation_ratio": "participation ratio",
              "twonn": "intrinsic dimension (TwoNN)"}
    for ax, (column, title) in zip(axes, titles.items()):
        _by_depth_lines(ax, dims, column, layer_order, styles)
        values = dims[column][dims[column] > 0]
        if len(values) and values.max() > 8 * values.min():  # log only where the values span a decade
            ax.set_yscale("log")
            _plain_log_ticks(ax.yaxis)
        ax.set_title(title)
    _legend_below(fig, list(axes), columns=4)
    return _finish(fig, legend_rows=(dims.model.nunique() + 3) // 4)


def cka_heatmaps(cka: pd.DataFrame, layer_order: list[str], titles: dict[str, str] | None = None) -> plt.Figure:
    """One layer × layer heatmap of CKA (mean over seeds) per pair of models, three to a row."""
    pairs = list(dict.fromkeys(cka.pair))
    fig, axes = _grid(len(pairs), 3.3, columns=3)
    im = None
    for ax, pair in zip(axes, pairs):
        mean = cka[cka.pair == pair].groupby(["layer_a", "layer_b"]).cka.mean().unstack()
        rows = [layer for layer in layer_order if layer in mean.index]
        cols = [layer for layer in layer_order if layer in mean.columns]
        mean = mean.loc[rows, cols]
        im = ax.imshow(mean.values, vmin=0, vmax=1, cmap="magma", origin="lower")
        for i in range(len(rows)):
            for j in range(len(cols)):
                v = mean.values[i, j]
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=9,
                        color="white" if v < 0.6 else "black")
        a, b = pair.split(" vs ", 1)
        ax.set_xticks(range(len(cols)), cols, rotation=30)
        ax.set_yticks(range(len(rows)), rows)
        ax.set(xlabel=b, ylabel=a)
        ax.set_title((titles or {}).get(pair, pair))
    fig.tight_layout()
    if im is not None:
        fig.colorbar(im, ax=axes, shrink=0.6, label="linear CKA")
    return fig


def cka_matrix(cka: pd.DataFrame, models: list[str], layer: str, labels: dict[str, str]) -> plt.Figure:
    """One model × model matrix of ``layer``'s CKA per seed (at most three panels; more seeds: their mean), for
    runs with too many pairs of models for a heatmap each; ``labels`` names the models."""
    pairs = cka[(cka.layer_a == layer) & (cka.layer_b == layer) & ~cka.pair.str.contains(" seed ")]
    seeds = sorted(pairs.seed.unique()) if "seed" in pairs else [0]
    panels = [(f"seed {s}", pairs[pairs.seed == s]) for s in seeds] if len(seeds) <= 3 else \
        [(f"mean of {len(seeds)} seeds", pairs)]
    n = len(models)
    side = min(PAGE_WIDTH / len(panels), 2.0 + 0.42 * n)
    fig, axes = plt.subplots(1, len(panels), figsize=(side * len(panels), side * 0.92 + 0.6), squeeze=False)
    index = {m: i for i, m in enumerate(models)}
    im = None
    for ax, (title, frame) in zip(axes[0], panels):
        matrix = np.full((n, n), np.nan)
        np.fill_diagonal(matrix, 1.0)
        for pair, value in frame.groupby("pair").cka.mean().items():
            a, b = str(pair).split(" vs ", 1)
            if a in index and b in index:
                matrix[index[a], index[b]] = matrix[index[b], index[a]] = value
        im = ax.imshow(matrix, vmin=0, vmax=1, cmap="magma")
        size = max(5, min(9, 60 / max(n, 1)))
        for i in range(n):
            for j in range(n):
                if np.isfinite(matrix[i, j]):
                    ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=size,
                            color="white" if matrix[i, j] < 0.6 else "black")
        names = [labels.get(m, m) for m in models]
        ax.set_xticks(range(n), names, rotation=90, fontsize=size + 1)
        ax.set_yticks(range(n), names if ax is axes[0][0] else [""] * n, fontsize=size + 1)
        ax.set_title(f"{title}: CKA at {layer}")
    fig.tight_layout()
    if im is not None:
        fig.colorbar(im, ax=list(axes[0]), shrink=0.7, label="linear CKA")
    return fig


def label_efficiency_curves(frame: pd.DataFrame, styles: Styles, marked: set[str] | None = None) -> plt.Figure:
    """Final-layer probe accuracy against labels per class (log scale), mean with min–max band over draws
    and seeds; the rightmost point is all labels. Models in ``marked`` (trained with labels) are dashed."""
    fig, ax = plt.subplots(figsize=(PAGE_WIDTH * 0.72, 4.2))
    counts = sorted(c for c in frame.per_class.unique() if c > 0)
    all_x = counts[-1] * 3 if counts else 1
    for model, group in frame.groupby("model", sort=False):
        g = group.assign(x=group.per_class.where(group.per_class > 0, all_x))
        stats = g.groupby("x").test_accuracy.agg(["mean", "min", "max"]).sort_index()
        color = _color(styles, model)
        dashed = model in (marked or set())
        ax.plot(stats.index, stats["mean"], "--o" if dashed else "-o", ms=4, color=color,
                label=_label(styles, model) + (" (trained with labels)" if dashed else ""))
        ax.fill_between(stats.index, stats["min"], stats["max"], color=color, alpha=0.15)
    ax.set_xscale("log")
    ax.set_xticks(counts + [all_x], [str(c) for c in counts] + ["all"])
    ax.minorticks_off()
    ax.set(xlabel="labelled training images per class", ylabel="test accuracy",
           title="label efficiency of the final layer (linear probe)")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    return fig


def structure_bars(frame: pd.DataFrame, styles: Styles) -> plt.Figure:
    """k-means NMI and ARI, class silhouette and UMAP trustworthiness per model (mean over seeds)."""
    names = {"kmeans_nmi": "k-means NMI", "kmeans_ari": "k-means ARI", "silhouette": "class silhouette (cosine)",
             "umap_trustworthiness": "UMAP trustworthiness"}
    columns = [c for c in names if c in frame and frame[c].notna().any()]
    mean = frame.groupby("model", sort=False)[columns].mean()
    # horizontal bars, the models named once on the shared axis: readable with ten regimes and the baselines
    fig, axes = plt.subplots(1, max(1, len(columns)), figsize=(PAGE_WIDTH, 1.2 + 0.3 * len(mean)), sharey=True,
                             squeeze=False)
    for ax, column in zip(axes[0], columns):
        values = mean[column]
        ax.barh(range(len(values)), values.values, color=[_color(styles, m) for m in values.index])
        ax.set_title(names[column])
        ax.grid(alpha=0.3, axis="x")
    axes[0][0].set_yticks(range(len(mean)), [_label(styles, m) for m in mean.index])
    axes[0][0].invert_yaxis()  # the first model on top
    fig.tight_layout()
    return fig


def gradient_norms(histories: dict[str, pd.DataFrame], styles: Styles) -> plt.Figure:
    """Mean per-step gradient norm of each layer per epoch, one panel per regime (log scale), one legend."""
    fig, axes = _grid(len(histories), 3.2, columns=3)
    layers: list[str] = []
    for frame in histories.values():
        layers += [c.removeprefix("grad_norm_") for c in frame if c.startswith("grad_norm_")
                   and not c.startswith("grad_norm_max_") and c.removeprefix("grad_norm_") not in layers]
    cmap = plt.get_cmap("viridis")
    colors = {layer: cmap(i / max(1, len(layers) - 1)) for i, layer in enumerate(layers)}
    for ax, (regime, frame) in zip(axes, histories.items()):
        mean = frame.groupby("epoch").mean(numeric_only=True)
        for layer in layers:
            if f"grad_norm_{layer}" in mean:
                ax.plot(mean.index, mean[f"grad_norm_{layer}"], "-o", ms=3, color=colors[layer], label=layer)
        ax.set(title=_label(styles, regime), xlabel="epoch", yscale="log")
        _plain_log_ticks(ax.yaxis)
        _epoch_axis(ax, sorted({int(e) for e in frame["epoch"]}))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("‖∂loss/∂θ‖ per step")
    handles = [plt.Line2D([], [], color=colors[layer], marker="o", ms=3, label=layer) for layer in layers]
    fig.legend(handles=handles, loc="lower center", ncol=min(8, len(handles)), frameon=False)
    return _finish(fig, legend_rows=(len(handles) + 7) // 8)


def filter_grid(filters: dict[str, np.ndarray], styles: Styles) -> plt.Figure:
    """First-layer convolution filters, one row per model, each scaled to its own range: in colour when the
    filters read three input channels (RGB images), else their first input channel in grey."""
    rows = []
    for weights in filters.values():
        w = weights[:, :3] if weights.shape[1] == 3 else weights[:, :1]
        lo = w.min(axis=(1, 2, 3), keepdims=True)
        hi = w.max(axis=(1, 2, 3), keepdims=True)
        rows.append((w - lo) / np.where(hi > lo, hi - lo, 1))
    return image_grid(rows, [_label(styles, m) for m in filters], cell=0.4)


def sorted_bars(values: dict[str, np.ndarray], ylabel: str, title: str) -> plt.Figure:
    """Each series' values sorted from largest to smallest, as bars (one panel per series)."""
    fig, axes = _grid(len(values), 3.2, columns=2)
    for ax, (name, v) in zip(axes, values.items()):
        v = np.sort(np.asarray(v, dtype=float))[::-1]
        ax.bar(np.arange(1, len(v) + 1), v, color="#9467bd", width=1.0)
        ax.set(title=f"{title}: {name}", xlabel="latent dimension (sorted)", ylabel=ylabel)
        ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return fig
