"""Figures for the report: each function takes tables or arrays and returns a matplotlib Figure."""
from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

MODEL_COLORS = {"pixels": "#7f7f7f", "pca": "#bcbd22", "random": "#8c564b",
                "supervised": "#1f77b4", "autoencoder": "#d62728"}
MODEL_LABELS = {"pixels": "raw pixels", "pca": "PCA of pixels", "random": "random-init encoder",
                "supervised": "supervised", "autoencoder": "autoencoder"}


def to_data_uri(fig: plt.Figure, dpi: int = 110) -> str:
    """PNG of the figure as a data: URI (the report embeds every image, so it opens offline)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def training_curves(histories: dict[str, pd.DataFrame]) -> plt.Figure:
    """Per regime: training loss, the validation metric and the per-epoch latent probe, mean over seeds."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    for regime, frame in histories.items():
        mean = frame.groupby("epoch").mean(numeric_only=True)
        color = MODEL_COLORS.get(regime)
        axes[0].plot(mean.index, mean["train_loss"], "-o", ms=3, color=color, label=regime)
        if "val_accuracy" in mean:
            axes[1].plot(mean.index, mean["val_accuracy"], "-o", ms=3, color=color, label=f"{regime}: val accuracy")
        if "val_recon_mse" in mean:
            twin = axes[1].twinx() if "val_accuracy" in pd.concat(histories.values()) else axes[1]
            twin.plot(mean.index, mean["val_recon_mse"], "-s", ms=3, color=color, label=f"{regime}: val recon MSE")
            twin.set_ylabel("reconstruction MSE")
            twin.legend(loc="center right", fontsize=8)
        if "val_latent_probe_accuracy" in mean:
            axes[2].plot(mean.index, mean["val_latent_probe_accuracy"], "-o", ms=3, color=color, label=regime)
    axes[0].set(title="training loss", xlabel="epoch", yscale="log")
    axes[1].set(title="validation metric", xlabel="epoch", ylabel="accuracy")
    axes[2].set(title="latent linear probe (validation)", xlabel="epoch", ylabel="accuracy")
    for ax in (axes[0], axes[2]):
        ax.legend(fontsize=8)
    if axes[1].lines:
        axes[1].legend(loc="center left", fontsize=8)
    fig.tight_layout()
    return fig


def accuracy_by_depth(probes: pd.DataFrame, layer_order: list[str]) -> plt.Figure:
    """Probe test accuracy against depth, one line per model (linear solid, kNN dashed), mean ± range over seeds."""
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    x_of = {name: i for i, name in enumerate(layer_order)}
    for (model, probe), group in probes.groupby(["model", "probe"], sort=False):
        stats = group.groupby("layer").test_accuracy.agg(["mean", "min", "max"])
        stats = stats.loc[[l for l in layer_order if l in stats.index]]
        xs = [x_of[l] for l in stats.index]
        style = "-" if probe == "linear" else "--"
        color = MODEL_COLORS.get(model)
        label = f"{MODEL_LABELS.get(model, model)} ({probe})"
        if len(xs) == 1 and model in ("pixels",):
            ax.axhline(stats["mean"].iloc[0], color=color, ls=style, lw=1, label=label)
            continue
        ax.plot(xs, stats["mean"], style, marker="o", ms=4, color=color, label=label)
        if (stats["max"] > stats["min"]).any():
            ax.fill_between(xs, stats["min"], stats["max"], color=color, alpha=0.12)
    ax.set_xticks(range(len(layer_order)), layer_order)
    ax.set(xlabel="layer (input → latent)", ylabel="test accuracy", title="probe accuracy by depth")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="lower right")
    fig.tight_layout()
    return fig


def projection_panels(coords: dict[str, np.ndarray], labels: np.ndarray, class_names: list[str],
                      titles: dict[str, str]) -> plt.Figure:
    """One 2-D scatter per model, coloured by class, side by side with a shared legend."""
    n = len(coords)
    fig, axes = plt.subplots(1, n, figsize=(3.4 * n, 3.6), squeeze=False)
    cmap = plt.get_cmap("tab10" if len(class_names) <= 10 else "tab20")
    for ax, (model, xy) in zip(axes[0], coords.items()):
        ax.scatter(xy[:, 0], xy[:, 1], c=labels, cmap=cmap, vmin=-0.5, vmax=cmap.N - 0.5, s=2, alpha=0.7,
                   linewidths=0, rasterized=True)
        ax.set_title(titles.get(model, model), fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [plt.Line2D([], [], ls="", marker="o", color=cmap(i), label=name) for i, name in enumerate(class_names)]
    fig.legend(handles=handles, loc="lower center", ncol=min(10, len(class_names)), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig


def image_grid(rows: list[np.ndarray], row_labels: list[str]) -> plt.Figure:
    """Images (N×C×H×W in [0, 1]) in labelled rows, e.g. inputs above their reconstructions."""
    n = max(len(r) for r in rows)
    fig, axes = plt.subplots(len(rows), n, figsize=(0.9 * n + 1.2, 0.95 * len(rows)), squeeze=False)
    for r, (images, label) in enumerate(zip(rows, row_labels)):
        for c in range(n):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if c < len(images):
                img = images[c]
                img = img[0] if img.shape[0] == 1 else np.transpose(img, (1, 2, 0))
                ax.imshow(img, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        axes[r][0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    fig.subplots_adjust(wspace=0.05, hspace=0.05)
    return fig
