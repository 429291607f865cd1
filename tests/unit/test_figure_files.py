"""A report figure's PNG is drawn once and cropped to its tight box (``png_and_bbox``): the same picture as
matplotlib's ``savefig(bbox_inches="tight")`` to a pixel, also when a label lies outside the canvas, and its
box crops the vector copies the same way."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from PIL import Image

from replearn.rundir import figure_files
from replearn.rundir.figure_files import png_and_bbox, plt, to_bytes


def _figure(outside: bool) -> plt.Figure:
    fig, axes = plt.subplots(1, 2, figsize=(6, 2.5))
    for i, ax in enumerate(axes):
        ax.plot(np.arange(10), np.arange(10) ** (1 + i), label=f"curve {i}")
        ax.set_xlabel("layer (input → latent)")
        ax.set_title(f"panel {i}")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=2, bbox_to_anchor=(0.5, -0.02))
    fig.tight_layout()
    if outside:  # a label left of the canvas (tight_layout ignores figure texts)
        fig.text(-0.02, 0.5, "a long row label", ha="right")
    return fig


def _pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=float)


@pytest.mark.parametrize("outside", [False, True])
def test_the_cropped_png_is_savefigs_tight_png(outside):
    reference = _pixels(to_bytes(_figure(outside), "png"))
    fig = _figure(outside)
    png, box = png_and_bbox(fig)
    ours = _pixels(png)
    assert abs(ours.shape[0] - reference.shape[0]) <= 2 and abs(ours.shape[1] - reference.shape[1]) <= 2
    h, w = min(ours.shape[0], reference.shape[0]), min(ours.shape[1], reference.shape[1])
    assert np.abs(ours[:h, :w] - reference[:h, :w]).mean() < 6  # the same picture (sub-pixel offset at most)
    assert (ours < 128).sum() == pytest.approx((reference < 128).sum(), rel=0.05)  # no ink lost or added
    assert (box[0] < 0) == outside and box[2] - box[0] == pytest.approx(ours.shape[1] / figure_files.DPI, abs=0.03)
    pdf = to_bytes(fig, "pdf", box)
    media = re.search(rb"/MediaBox \[ 0 0 ([\d.]+) ([\d.]+) \]", pdf)
    assert media and float(media[1]) == pytest.approx((box[2] - box[0]) * 72, abs=0.5)
    assert float(media[2]) == pytest.approx((box[3] - box[1]) * 72, abs=0.5)
    plt.close("all")


def test_the_vector_copies_reuse_the_pngs_layout_without_another_layout_pass(monkeypatch):
    """After ``png_and_bbox`` the figure has no layout engine (tight_layout leaves a placeholder that makes
    savefig run a whole extra layout pass per format), and its SVG, drawn twice, is the same bytes."""
    fig = _figure(outside=False)
    positions = [ax.get_position().bounds for ax in fig.axes]
    _, box = png_and_bbox(fig)
    assert fig.get_layout_engine() is None
    draws = []
    original = plt.Figure.draw
    monkeypatch.setattr(plt.Figure, "draw", lambda self, renderer: draws.append(1) or original(self, renderer))
    first = to_bytes(fig, "svg", box)
    assert len(draws) == 1  # one draw per vector copy (two while the placeholder engine stayed)
    assert to_bytes(fig, "svg", box) == first  # element ids from a fixed salt, not a fresh uuid
    assert [ax.get_position().bounds for ax in fig.axes] == positions  # the layout tight_layout chose
    plt.close("all")
