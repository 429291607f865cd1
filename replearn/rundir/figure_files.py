"""A report figure's files: the house style every figure is drawn in, its bytes in each format, and the worker
process that writes the SVG and PDF copies. Kept apart from the analyses so that the worker starts in a
fraction of a second (it imports matplotlib, not the analyses and their libraries)."""

from __future__ import annotations

import io
import json
import pickle
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from replearn.rundir import layout  # noqa: E402
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


def to_bytes(fig: plt.Figure, fmt: str) -> bytes:
    """The figure saved in ``fmt`` (png, svg, pdf), without a date, so that a re-render writes the same bytes."""
    buffer = io.BytesIO()
    fig.savefig(
        buffer,
        format=fmt,
        dpi=DPI,
        bbox_inches="tight",
        pad_inches=0.05,
        metadata={"Date": None} if fmt == "svg" else ({"CreationDate": None} if fmt == "pdf" else None),
    )
    return buffer.getvalue()


def write_figure_vectors(
    fig: plt.Figure, run_dir: str, name: str, formats: tuple[str, ...] = ("svg", "pdf"), close: bool = False
) -> list[str]:
    """Write ``figures/<name>.<fmt>`` for each vector format; a note per file that could not be written."""
    notes = []
    for fmt in formats:
        try:
            atomic_write_bytes(f"{run_dir}/{layout.FIGURES}/{name}.{fmt}", to_bytes(fig, fmt))
        except OSError as exc:
            notes.append(f"{layout.FIGURES}/ could not be written ({exc.strerror or type(exc).__name__})")
    if close:
        plt.close(fig)
    return notes


def write_vector_copies(
    pickled_figure: bytes, run_dir: str, name: str, formats: tuple[str, ...] = ("svg", "pdf")
) -> list[str]:
    """Write ``figures/<name>.svg`` and/or ``.pdf`` from a pickled figure (run in the report's export worker);
    returns a note per file that could not be written."""
    return write_figure_vectors(pickle.loads(pickled_figure), run_dir, name, formats, close=True)


def vector_worker() -> None:
    """Read length-prefixed pickles ``(run_dir, name, pickled figure, formats)`` from stdin until it closes,
    write each figure's vector copies, and print the notes of files that could not be written as JSON."""
    notes: list[str] = []
    stream = sys.stdin.buffer
    while len(header := stream.read(8)) == 8:
        run_dir, name, figure, formats = pickle.loads(stream.read(int.from_bytes(header, "little")))
        notes += write_vector_copies(figure, run_dir, name, tuple(formats))
    sys.stdout.write(json.dumps(list(dict.fromkeys(notes))))
