"""A report figure's files: the house style every figure is drawn in, its bytes in each format, and the worker
process that writes the SVG and PDF copies. Kept apart from the analyses so that the worker starts in a
fraction of a second (it imports matplotlib, not the analyses and their libraries)."""

from __future__ import annotations

import io
import json
import math
import pickle
import sys

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.colors  # noqa: E402
import matplotlib.image  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.transforms import Bbox  # noqa: E402

from replearn.rundir import layout, pdf_fonts  # noqa: E402
from replearn.rundir.io import atomic_write_bytes  # noqa: E402

DPI = 110
plt.rcParams.update(
    {
        "font.size": 10,
        "axes.titlesize": 10.5,
        "axes.labelsize": 10,
        "legend.fontsize": 9,
        "xtick.labelsize": 9,
        "ytick.labelsize": 9,
        "figure.titlesize": 11,
        "svg.fonttype": "none",
        "svg.hashsalt": "replearn",  # element ids from a fixed salt, not uuid4: a re-render writes the same SVG
        "pdf.fonttype": 42,  # TrueType: text stays text, and journals that refuse Type 3 fonts accept it
        "pdf.compression": 1,  # zlib's fastest level: a third less time per PDF than the default 6, files ≈ 9% larger
        "axes.spines.top": False,
        "axes.spines.right": False,
        # every string drawn is plain text: a user's class or run name such as "$\\foo$" must be
        # shown as written, never parsed as mathtext (which fails to render)
        "text.parse_math": False,
        "text.usetex": False,
    }
)


def plain_number(value: float, _position: object = None) -> str:
    """A tick label written as a plain number (6, 10, 40), not 4×10¹."""
    return f"{value:g}"


PAD_INCHES = 0.05


def to_bytes(fig: plt.Figure, fmt: str, bbox: tuple[float, float, float, float] | None = None) -> bytes:
    """The figure saved in ``fmt`` (png, svg, pdf), without a date, so that a re-render writes the same bytes;
    cropped to ``bbox`` (inches, as ``png_and_bbox`` returns it) when given, else to its tight bounding box."""
    if fmt == "pdf":
        pdf_fonts.install()
    buffer = io.BytesIO()
    fig.savefig(
        buffer,
        format=fmt,
        dpi=DPI,
        bbox_inches=Bbox.from_extents(*bbox) if bbox is not None else "tight",
        pad_inches=PAD_INCHES,
        metadata={"Date": None} if fmt == "svg" else ({"CreationDate": None} if fmt == "pdf" else None),
    )
    return buffer.getvalue()


def png_and_bbox(fig: plt.Figure) -> tuple[bytes, tuple[float, float, float, float]]:
    """The figure as PNG, cropped to its tight bounding box plus a margin, and that box (inches) for the vector
    copies: one Agg draw, where ``savefig(bbox_inches="tight")`` makes a layout pass and then draws again (a
    third of a report's time). Content drawn outside the canvas (a label left of it) falls back to savefig with
    the box, which draws it. The draw fixes the layout, so the figure's layout engine is then dropped: savefig
    makes an extra layout pass for a figure that has one, even the placeholder ``tight_layout()`` leaves (a
    third of each SVG's and PDF's time), and the vector copies are drawn with exactly the PNG's layout."""
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    fig.set_dpi(DPI)  # what savefig(dpi=DPI) draws at
    canvas.draw()
    with plt.rc_context({"figure.autolayout": False, "figure.constrained_layout.use": False}):
        fig.set_layout_engine(None)  # None, not a default engine from the user's matplotlibrc
    tight = fig.get_tightbbox(canvas.get_renderer())
    box = tight.padded(PAD_INCHES)
    extents = (box.x0, box.y0, box.x1, box.y1)
    width, height = fig.get_size_inches()
    slack = 0.5 / DPI  # content within half a pixel of the edge is drawn
    if tight.x0 < -slack or tight.y0 < -slack or tight.x1 > width + slack or tight.y1 > height + slack:
        return to_bytes(fig, "png", extents), extents
    rgba = np.asarray(canvas.buffer_rgba())
    rows, cols = rgba.shape[:2]
    left, right = math.floor(box.x0 * DPI), math.ceil(box.x1 * DPI)
    top, bottom = rows - math.ceil(box.y1 * DPI), rows - math.floor(box.y0 * DPI)
    cropped = np.empty((bottom - top, right - left, 4), dtype=np.uint8)
    cropped[:] = np.round(
        np.asarray(matplotlib.colors.to_rgba(fig.get_facecolor())) * 255
    )  # the margin beyond the canvas
    inside = rgba[max(0, top) : min(rows, bottom), max(0, left) : min(cols, right)]
    cropped[max(0, -top) : max(0, -top) + inside.shape[0], max(0, -left) : max(0, -left) + inside.shape[1]] = inside
    buffer = io.BytesIO()
    matplotlib.image.imsave(buffer, cropped, format="png", dpi=DPI)
    return buffer.getvalue(), extents


def write_figure_vectors(
    fig: plt.Figure,
    run_dir: str,
    name: str,
    formats: tuple[str, ...] = ("svg", "pdf"),
    close: bool = False,
    bbox: tuple[float, float, float, float] | None = None,
) -> list[str]:
    """Write ``figures/<name>.<fmt>`` for each vector format (cropped to ``bbox`` when given); a note per file
    that could not be written."""
    notes = []
    for fmt in formats:
        try:
            atomic_write_bytes(f"{run_dir}/{layout.FIGURES}/{name}.{fmt}", to_bytes(fig, fmt, bbox))
        except OSError as exc:
            notes.append(f"{layout.FIGURES}/ could not be written ({exc.strerror or type(exc).__name__})")
    if close:
        plt.close(fig)
    return notes


def write_vector_copies(
    pickled_figure: bytes,
    run_dir: str,
    name: str,
    formats: tuple[str, ...] = ("svg", "pdf"),
    bbox: tuple[float, float, float, float] | None = None,
) -> list[str]:
    """Write ``figures/<name>.svg`` and/or ``.pdf`` from a pickled figure (run in the report's export worker);
    returns a note per file that could not be written."""
    return write_figure_vectors(pickle.loads(pickled_figure), run_dir, name, formats, close=True, bbox=bbox)


def vector_worker() -> None:
    """Read length-prefixed pickles ``(run_dir, name, pickled figure, formats, bbox)`` from stdin until it
    closes, write each figure's vector copies, and print the notes of files that could not be written as JSON."""
    notes: list[str] = []
    stream = sys.stdin.buffer
    while len(header := stream.read(8)) == 8:
        run_dir, name, figure, formats, bbox = pickle.loads(stream.read(int.from_bytes(header, "little")))
        notes += write_vector_copies(figure, run_dir, name, tuple(formats), bbox)
    sys.stdout.write(json.dumps(list(dict.fromkeys(notes))))
