"""Figures of the cross-run report: a measure against the swept value, one line per model (or layer, or
pair) with its 95% interval as error bars, one panel per dataset, encoder or further swept value."""
from __future__ import annotations

import numpy as np
import pandas as pd

from replearn.analyses.plots import PAGE_WIDTH
from replearn.rundir.figure_files import plt  # pyplot on Agg, in the report's house style

LAYER_COLORS = "viridis"
MAX_PANELS = 9  # panels drawn per figure: three rows


def series_panels(frame: pd.DataFrame, x_title: str, y_title: str, ticks: list[tuple[float, str]],
                  log_x: bool = False, log_y: bool = False, zero_line: bool = False) -> plt.Figure:
    """``frame`` rows: panel, series, color, x, mean, low, high. One subplot per panel, three to a row, at most
    ``MAX_PANELS`` of them (the page stays a few screens long; the table beside it holds every panel)."""
    panels = list(dict.fromkeys(frame.panel))[:MAX_PANELS]
    cols = min(3, max(1, len(panels)))
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(PAGE_WIDTH if cols > 1 else 6.0, 3.4 * rows + 0.6), squeeze=False)
    flat = list(axes.ravel())
    for ax in flat[len(panels):]:
        ax.set_visible(False)
    for ax, panel in zip(flat, panels):
        for series, group in frame[frame.panel == panel].groupby("series", sort=False):
            group = group.sort_values("x")
            low = group["low"].clip(lower=group["mean"] / 10) if log_y else group["low"]  # a log axis has no 0
            err = np.vstack([group["mean"] - low, group["high"] - group["mean"]])
            err = np.where(np.isfinite(err), np.maximum(err, 0), 0)
            ax.errorbar(group["x"], group["mean"], yerr=err, fmt="-o", ms=4, capsize=3, color=group["color"].iloc[0],
                        label=series)
        if zero_line:
            ax.axhline(0, color="#888", lw=0.8, ls="--")
        if log_x:
            ax.set_xscale("log")
        if log_y and (frame.loc[frame.panel == panel, "mean"] > 0).all():
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _pos: f"{v:g}"))
        ax.set_xticks([t for t, _ in ticks], [label for _, label in ticks], rotation=30 if len(ticks) > 6 else 0)
        ax.minorticks_off()
        ax.set_title(panel if len(panel) <= 60 else panel[:59] + "…")
        ax.set_xlabel(x_title)
        ax.set_ylabel(y_title)
        ax.grid(alpha=0.3)
    handles, labels = [], []
    for ax in flat[:len(panels)]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    legend_rows = (len(labels) + 3) // 4
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), frameon=False)
    bottom = min(0.45, (0.28 * legend_rows + 0.08) / fig.get_figheight()) if legend_rows else 0
    fig.tight_layout(rect=(0, bottom, 1, 1))
    return fig


def layer_colors(layers: list[str]) -> dict[str, str]:
    """One colour per encoder layer, from shallow (dark) to deep (bright); heads and decoders grey."""
    cmap = plt.get_cmap(LAYER_COLORS)
    encoder = [layer for layer in layers if layer.startswith("stage") or layer in ("input", "latent")]
    n = max(1, len(encoder) - 1)
    colors = {layer: "#%02x%02x%02x" % tuple(int(255 * c) for c in cmap(0.9 * i / n)[:3])
              for i, layer in enumerate(encoder)}
    return {layer: colors.get(layer, "#7f7f7f") for layer in layers}


def category_colors(names: list[str]) -> dict[str, str]:
    """One colour per name from matplotlib's tab10 cycle (pairs of regimes and other unordered series)."""
    cycle = plt.get_cmap("tab10")
    return {name: "#%02x%02x%02x" % tuple(int(255 * c) for c in cycle(i % 10)[:3]) for i, name in enumerate(names)}
