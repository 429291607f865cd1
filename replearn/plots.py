"""Figures for the report: each function takes tables or arrays and returns a matplotlib Figure."""
from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from matplotlib.ticker import MaxNLocator  # noqa: E402

Styles = dict[str, tuple[str, str]]  # model name -> (label, colour)


def _label(styles: Styles, model: str) -> str:
    return styles.get(model, (model, "#7f7f7f"))[0]


def _color(styles: Styles, model: str) -> str:
    return styles.get(model, (model, "#7f7f7f"))[1]


def _grid(n: int, width: float, height: float, columns: int = 3) -> tuple[plt.Figure, list[plt.Axes]]:
    cols = min(columns, max(1, n))
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def to_data_uri(fig: plt.Figure, dpi: int = 110) -> str:
    """PNG of the figure as a data: URI (the report embeds every image, so it opens offline)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight", pad_inches=0.05)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def training_curves(histories: dict[str, pd.DataFrame], styles: Styles) -> plt.Figure:
    """Per regime, mean over seeds: training loss relative to its first epoch, and the validation
    accuracy of the per-epoch latent linear probe."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    for regime, frame in histories.items():
        mean = frame.groupby("epoch").mean(numeric_only=True)
        color = _color(styles, regime)
        first = mean["train_loss"].iloc[0]
        if first and np.isfinite(first) and first > 0:
            axes[0].plot(mean.index, mean["train_loss"] / first, "-o", ms=3, color=color, label=_label(styles, regime))
        if "val_latent_probe_accuracy" in mean:
            axes[1].plot(mean.index, mean["val_latent_probe_accuracy"], "-o", ms=3, color=color,
                         label=_label(styles, regime))
    axes[0].set(title="training loss ÷ its first-epoch value", xlabel="epoch", yscale="log")
    axes[1].set(title="latent linear probe (validation)", xlabel="epoch", ylabel="accuracy")
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    if axes[1].lines:
        axes[1].legend(fontsize=8, loc="lower right")
    elif axes[0].lines:
        axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def accuracy_by_depth(probes: pd.DataFrame, layer_order: list[str], styles: Styles) -> plt.Figure:
    """Probe test accuracy against depth, one line per model (linear solid, kNN dashed), mean ± range over seeds."""
    fig, ax = plt.subplots(figsize=(9.5, 4.2))
    x_of = {name: i for i, name in enumerate(layer_order)}
    for (model, probe), group in probes.groupby(["model", "probe"], sort=False):
        stats = group.groupby("layer").test_accuracy.agg(["mean", "min", "max"])
        stats = stats.loc[[l for l in layer_order if l in stats.index]]
        xs = [x_of[l] for l in stats.index]
        style = "-" if probe == "linear" else "--"
        color = _color(styles, model)
        label = f"{_label(styles, model)} ({probe})"
        if len(xs) == 1 and model == "pixels":
            ax.axhline(stats["mean"].iloc[0], color=color, ls=style, lw=1, label=label)
            continue
        if len(xs) == 1:
            ax.plot(xs, stats["mean"], marker="D" if probe == "linear" else "d", ls="", ms=6, color=color,
                    mfc=color if probe == "linear" else "white", label=label)
            continue
        ax.plot(xs, stats["mean"], style, marker="o", ms=4, color=color, label=label)
        if (stats["max"] > stats["min"]).any():
            ax.fill_between(xs, stats["min"], stats["max"], color=color, alpha=0.12)
    ax.set_xticks(range(len(layer_order)), layer_order)
    ax.set(xlabel="layer (input → latent)", ylabel="test accuracy", title="probe accuracy by depth")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    return fig


def projection_panels(coords: dict[str, np.ndarray], labels: np.ndarray, class_names: list[str],
                      titles: dict[str, str]) -> plt.Figure:
    """One 2-D scatter per model, coloured by class, side by side with a shared legend."""
    fig, axes = _grid(len(coords), 3.4, 3.6, columns=4)
    cmap = plt.get_cmap("tab10" if len(class_names) <= 10 else "tab20")
    for ax, (model, xy) in zip(axes, coords.items()):
        ax.scatter(xy[:, 0], xy[:, 1], c=labels, cmap=cmap, vmin=-0.5, vmax=cmap.N - 0.5, s=2, alpha=0.7,
                   linewidths=0, rasterized=True)
        ax.set_title(titles.get(model, model), fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [plt.Line2D([], [], ls="", marker="o", color=cmap(i), label=name) for i, name in enumerate(class_names)]
    rows = (len(coords) + 3) // 4
    fig.legend(handles=handles, loc="lower center", ncol=min(10, len(class_names)), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.08 / rows, 1, 1))
    return fig


def image_grid(rows: list[np.ndarray], row_labels: list[str], cell: float = 0.55) -> plt.Figure:
    """Images (N×C×H×W in [0, 1]) in labelled rows, e.g. inputs above their reconstructions.

    The rows are tiled into one mosaic array and drawn with a single ``imshow`` (fast even for many images).
    """
    n = max(len(r) for r in rows)
    c, h, w = rows[0].shape[1:]
    pad = max(1, h // 14)
    mosaic = np.ones((len(rows) * (h + pad) - pad, n * (w + pad) - pad, 3), dtype=np.float32)
    for r, images in enumerate(rows):
        for i, img in enumerate(images):
            tile = np.repeat(img[:1], 3, axis=0) if img.shape[0] == 1 else img[:3]
            y, x = r * (h + pad), i * (w + pad)
            mosaic[y:y + h, x:x + w] = np.transpose(tile, (1, 2, 0))
    fig, ax = plt.subplots(figsize=(cell * n + 1.6, cell * len(rows) + 0.1))
    ax.imshow(mosaic.clip(0, 1), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([(h + pad) * r + h / 2 for r in range(len(rows))], row_labels, fontsize=8)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.tick_params(length=0)
    fig.tight_layout(pad=0.2)
    return fig


def _by_depth_lines(ax: plt.Axes, frame: pd.DataFrame, column: str, layer_order: list[str], styles: Styles) -> None:
    x_of = {name: i for i, name in enumerate(layer_order)}
    for model, group in frame.groupby("model", sort=False):
        stats = group.groupby("layer")[column].agg(["mean", "min", "max"])
        stats = stats.loc[[l for l in layer_order if l in stats.index]]
        xs = [x_of[l] for l in stats.index]
        ax.plot(xs, stats["mean"], "-o" if len(xs) > 1 else "D", ms=4, color=_color(styles, model),
                label=_label(styles, model))
        if (stats["max"] > stats["min"]).any():
            ax.fill_between(xs, stats["min"], stats["max"], color=_color(styles, model), alpha=0.12)
    ax.set_xticks(range(len(layer_order)), layer_order, fontsize=8)
    ax.grid(alpha=0.3)


def dimension_by_depth(dims: pd.DataFrame, layer_order: list[str], styles: Styles) -> plt.Figure:
    """PCA-90% dimension, participation ratio and TwoNN intrinsic dimension against depth, per model."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    titles = {"pca90": "components for 90% variance", "participation_ratio": "participation ratio",
              "twonn": "intrinsic dimension (TwoNN)"}
    for ax, (column, title) in zip(axes, titles.items()):
        _by_depth_lines(ax, dims, column, layer_order, styles)
        ax.set(title=title, xlabel="layer (input → latent)", yscale="log")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def cka_heatmaps(cka: pd.DataFrame, layer_order: list[str]) -> plt.Figure:
    """One layer × layer heatmap of CKA (mean over seeds) per pair of models."""
    pairs = list(dict.fromkeys(cka.pair))
    fig, axes = _grid(len(pairs), 4.0, 3.6, columns=4)
    fig.subplots_adjust(wspace=0.5, hspace=0.6)
    for ax, pair in zip(axes, pairs):
        mean = cka[cka.pair == pair].groupby(["layer_a", "layer_b"]).cka.mean().unstack()
        rows = [l for l in layer_order if l in mean.index]
        cols = [l for l in layer_order if l in mean.columns]
        mean = mean.loc[rows, cols]
        im = ax.imshow(mean.values, vmin=0, vmax=1, cmap="magma", origin="lower")
        for i in range(len(rows)):
            for j in range(len(cols)):
                v = mean.values[i, j]
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="white" if v < 0.6 else "black")
        a, b = pair.split(" vs ", 1)
        ax.set_xticks(range(len(cols)), cols, fontsize=7, rotation=45)
        ax.set_yticks(range(len(rows)), rows, fontsize=7)
        ax.set(xlabel=b, ylabel=a)
        ax.set_title(pair, fontsize=9)
    fig.colorbar(im, ax=axes, shrink=0.8, label="linear CKA")
    return fig


def label_efficiency_curves(frame: pd.DataFrame, styles: Styles) -> plt.Figure:
    """Final-layer probe accuracy against labels per class (log scale), mean with min–max band over draws
    and seeds; the rightmost point is all labels."""
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    counts = sorted(c for c in frame.per_class.unique() if c > 0)
    all_x = counts[-1] * 3 if counts else 1
    for model, group in frame.groupby("model", sort=False):
        g = group.assign(x=group.per_class.where(group.per_class > 0, all_x))
        stats = g.groupby("x").test_accuracy.agg(["mean", "min", "max"]).sort_index()
        color = _color(styles, model)
        ax.plot(stats.index, stats["mean"], "-o", ms=4, color=color, label=_label(styles, model))
        ax.fill_between(stats.index, stats["min"], stats["max"], color=color, alpha=0.15)
    ax.set_xscale("log")
    ticks = counts + [all_x]
    ax.set_xticks(ticks, [str(c) for c in counts] + ["all"])
    ax.set(xlabel="labelled training images per class", ylabel="test accuracy",
           title="label efficiency of the final layer (linear probe)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def structure_bars(frame: pd.DataFrame, styles: Styles) -> plt.Figure:
    """k-means NMI and ARI, class silhouette and UMAP trustworthiness per model (mean over seeds)."""
    columns = [c for c in ("kmeans_nmi", "kmeans_ari", "silhouette", "umap_trustworthiness") if c in frame]
    mean = frame.groupby("model", sort=False)[columns].mean()
    fig, axes = plt.subplots(1, len(columns), figsize=(3.2 * len(columns), 3.0), squeeze=False)
    for ax, column in zip(axes[0], columns):
        values = mean[column]
        ax.bar(range(len(values)), values.values, color=[_color(styles, m) for m in values.index])
        ax.set_xticks(range(len(values)), [_label(styles, m) for m in values.index], rotation=40, ha="right",
                      fontsize=7)
        ax.set_title(column.replace("_", " "), fontsize=9)
        ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return fig


def gradient_norms(histories: dict[str, pd.DataFrame], styles: Styles) -> plt.Figure:
    """Mean per-step gradient norm of each layer per epoch, one panel per regime (log scale)."""
    fig, axes = _grid(len(histories), 5.0, 3.6)
    for ax, (regime, frame) in zip(axes, histories.items()):
        mean = frame.groupby("epoch").mean(numeric_only=True)
        columns = [c for c in mean if c.startswith("grad_norm_") and not c.startswith("grad_norm_max_")]
        cmap = plt.get_cmap("viridis")
        for i, column in enumerate(columns):
            ax.plot(mean.index, mean[column], "-o", ms=3, color=cmap(i / max(1, len(columns) - 1)),
                    label=column.removeprefix("grad_norm_"))
        ax.set(title=f"{_label(styles, regime)}", xlabel="epoch", ylabel="‖∂loss/∂θ‖ (mean per step)", yscale="log")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    fig.tight_layout()
    return fig


def filter_grid(filters: dict[str, np.ndarray], styles: Styles) -> plt.Figure:
    """First-layer convolution filters (first input channel), one row per model, each scaled to its own range."""
    rows = []
    for weights in filters.values():
        w = weights[:, 0]
        lo = w.min(axis=(1, 2), keepdims=True)
        hi = w.max(axis=(1, 2), keepdims=True)
        rows.append(((w - lo) / np.where(hi > lo, hi - lo, 1))[:, None])
    return image_grid(rows, [_label(styles, m) for m in filters])


def sorted_bars(values: dict[str, np.ndarray], ylabel: str, title: str) -> plt.Figure:
    """Each series' values sorted from largest to smallest, as bars side by side (one panel per series)."""
    fig, axes = _grid(len(values), 5.0, 3.2)
    for ax, (name, v) in zip(axes, values.items()):
        v = np.sort(np.asarray(v, dtype=float))[::-1]
        ax.bar(np.arange(1, len(v) + 1), v, color="#9467bd", width=1.0)
        ax.set(title=f"{title}: {name}", xlabel="latent dimension (sorted)", ylabel=ylabel)
        ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return fig
