"""One embedded font subset per font and process for the PDF copies of figures.

matplotlib embeds, in every PDF with TrueType (Type 42) text, a subset of each font cut to the glyphs that
figure uses, and cuts it with fontTools from the full font file each time: about 0.2 s per PDF, a third of
the time a report's PDF copies take. Here every PDF of a process asks for the same subset instead (printable
ASCII and the symbols figures print, plus any other glyph a figure needs), so the subset is cut once and
its bytes reused; each PDF embeds a few kilobytes more. The text stays text, in the same font, and a figure
that uses an unusual glyph still gets it (its subset is cut for it and kept too).

This wraps matplotlib's private ``_backend_pdf_ps.get_glyphs_subset`` (its matplotlib ≥ 3.11 form, which
takes glyph indices); with any other matplotlib nothing is changed and each PDF is cut as before.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from typing import Any

#: What every subset holds besides the glyphs a figure asks for: printable ASCII, the ligatures (ff, fi, fl, ffi,
#: ffl) that text shaping substitutes in words such as "efficiency", and the symbols figures print: matplotlib's
#: minus sign, operators, arrows and the Greek letters of measures and axes (a subset ~40 kB larger than one
#: figure's own, cut once per process instead of once per PDF).
COMMON_TEXT = (
    "".join(chr(code) for code in range(32, 127))
    + "\ufb00\ufb01\ufb02\ufb03\ufb04"
    + "−×÷±≈≠≤≥–—·•…°²³¹⁰′‖∂∑∫√∞∈→←↑↓↔"
    + "αβγδεζηθικλμνξπρστυφχψωΓΔΘΛΞΠΣΦΨΩ"
)
MAX_SUBSETS = 16  # per process: subsets for figures with unusual glyphs, oldest dropped first

_installed = False
_cuts = 0


def subsets_cut() -> int:
    """How many subsets this process has cut since ``install`` (the others were reused)."""
    return _cuts


def install() -> bool:
    """Make matplotlib's PDF backend reuse one subset per font in this process; True when installed (repeat
    calls are no-ops), False when this matplotlib's subsetting is not the form this wraps."""
    global _installed
    if _installed:
        return True
    try:
        from fontTools.ttLib import TTFont
        from matplotlib.backends import _backend_pdf_ps
    except ImportError:
        return False
    original = getattr(_backend_pdf_ps, "get_glyphs_subset", None)
    results = getattr(_backend_pdf_ps, "SubsetResults", None)
    if original is None or results is None or list(inspect.signature(original).parameters) != ["fontfile", "glyphs"]:
        return False
    lock = threading.Lock()
    common: dict[tuple[str, int], frozenset[int]] = {}
    subsets: OrderedDict[tuple[tuple[str, int], frozenset[int]], tuple[bytes, dict[int, int]]] = OrderedDict()

    @contextlib.contextmanager
    def shared_subset(fontfile: Any, glyphs: Iterable[int]) -> Iterator[Any]:
        font_key = (str(fontfile), int(getattr(fontfile, "face_index", 0)))
        if font_key not in common:
            common[font_key] = _glyph_indices(TTFont, *font_key, COMMON_TEXT)
        wanted = frozenset(int(glyph) for glyph in glyphs) | common[font_key]
        key = (font_key, wanted)
        with lock:
            if key in subsets:
                subsets.move_to_end(key)
            else:
                global _cuts
                _cuts += 1
                with original(fontfile, set(wanted)) as cut:
                    subsets[key] = (_backend_pdf_ps.font_as_file(cut.font).getvalue(), dict(cut.glyph_index_map))
                while len(subsets) > MAX_SUBSETS:
                    subsets.popitem(last=False)
            data, glyph_index_map = subsets[key]
        with TTFont(io.BytesIO(data)) as font:
            yield results(font, dict(glyph_index_map))

    shared_subset.__wrapped__ = original  # type: ignore[attr-defined]
    _backend_pdf_ps.get_glyphs_subset = shared_subset
    _installed = True
    return True


def _glyph_indices(ttfont: Any, path: str, face_index: int, text: str) -> frozenset[int]:
    """The glyph indices of ``text``'s characters that the font at ``path`` has."""
    with ttfont(path, fontNumber=face_index, lazy=True) as font:
        cmap = font.getBestCmap() or {}
        return frozenset(font.getGlyphID(cmap[ord(char)]) for char in text if ord(char) in cmap)
