"""A PDF copy embeds the process's shared font subset (``rundir.pdf_fonts``): every character code the PDF
draws maps, through its CID-to-glyph tables, to the same glyph of the same font as with matplotlib's own
per-figure subsets, and the page draws the same text; figures with different text reuse one subset, and a
figure with a glyph outside it still gets that glyph."""

from __future__ import annotations

import io
import re
import zlib

import numpy as np
import pytest
from fontTools.ttLib import TTFont
from matplotlib.backends import _backend_pdf_ps

from replearn.rundir import pdf_fonts
from replearn.rundir.figure_files import plt, to_bytes

pytestmark = pytest.mark.skipif(not pdf_fonts.install(), reason="this matplotlib subsets fonts another way")
TEXTS = ["Probe accuracy by layer", "CKA − κ ≥ 0.5 (x × y)", "rare glyphs: ∯ ≍ ₪ and ASCII"]


def _objects(pdf: bytes) -> dict[int, tuple[bytes, bytes]]:
    """Each object's dictionary and (inflated) stream, by number."""
    objects = {}
    for match in re.finditer(rb"(\d+) 0 obj\s*(.*?)endobj", pdf, re.S):
        head, _, rest = match.group(2).partition(b"stream")
        stream = rest.rpartition(b"endstream")[0].strip(b"\r\n")
        if stream and b"/FlateDecode" in head:
            stream = zlib.decompress(stream)
        objects[int(match.group(1))] = (head, stream)
    return objects


def _glyphs_drawn(pdf: bytes) -> dict[tuple[str, int], str]:
    """(font name without its subset prefix, character code) → the name of the glyph the embedded font draws."""
    objects = _objects(pdf)
    drawn = {}
    for head, _ in objects.values():
        if b"/CIDToGIDMap" not in head:
            continue
        name = re.search(rb"/BaseFont /(?:[A-Z]{6}\+)?(\S+)", head).group(1).decode()
        table = objects[int(re.search(rb"/CIDToGIDMap (\d+) 0 R", head).group(1))][1]
        descriptor = objects[int(re.search(rb"/FontDescriptor (\d+) 0 R", head).group(1))][0]
        font = TTFont(io.BytesIO(objects[int(re.search(rb"/FontFile2 (\d+) 0 R", descriptor).group(1))][1]))
        order = font.getGlyphOrder()
        for code in range(len(table) // 2):
            if gid := int.from_bytes(table[2 * code : 2 * code + 2], "big"):
                drawn[(name, code)] = order[gid]
    return drawn


def _page(pdf: bytes) -> bytes:
    """The content stream that draws the text (the page's operators; not a font file)."""
    pages = [stream for head, stream in _objects(pdf).values() if b"/Length1" not in head and b" Tf" in stream]
    assert len(pages) == 1
    return pages[0]


def _pdf(text: str) -> bytes:
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot(np.arange(3))
    ax.set_title(text)
    ax.set_xlabel("epoch")
    pdf = to_bytes(fig, "pdf")
    plt.close(fig)
    return pdf


@pytest.mark.parametrize("text", TEXTS)
def test_the_same_glyphs_are_drawn_as_with_matplotlibs_own_subsets(text, monkeypatch):
    ours = _pdf(text)
    monkeypatch.setattr(_backend_pdf_ps, "get_glyphs_subset", _backend_pdf_ps.get_glyphs_subset.__wrapped__)
    reference = _pdf(text)
    assert _page(ours) == _page(reference)
    drawn, expected = _glyphs_drawn(ours), _glyphs_drawn(reference)
    assert expected and drawn == expected


def test_figures_with_different_text_reuse_one_subset():
    _pdf("warm-up: the first subset of this process")
    before = pdf_fonts.subsets_cut()
    for text in ["layer 1: supervised", "epoch 20 (autoencoder)", "CKA − 0.5 × 2", "label efficiency (office)"]:
        _pdf(text)
    assert pdf_fonts.subsets_cut() == before
    _pdf("∇ ∮ ≌")  # outside the shared subset (and not drawn before): cut for this figure
    assert pdf_fonts.subsets_cut() == before + 1
