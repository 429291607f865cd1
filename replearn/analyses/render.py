"""How the analyses' report sections show numbers and figures, the same way everywhere.

Tables get readable headers and one number format per column (whole numbers without decimals, the
same decimals down a column); every figure is embedded in the report as PNG and also written as
``figures/<name>.{png,svg,pdf}``, and every main table as ``tables/<name>.{csv,tex}`` (LaTeX booktabs),
under stable names in the run directory, ready for a paper.
"""
from __future__ import annotations

import base64
import math
import re
from typing import Any

import pandas as pd

from replearn.analyses import plots
from replearn.analyses.base import RunArtifacts
from replearn.rundir import layout

PLUS_MINUS = ("Brackets are 95% intervals over seeds (replearn.metrics.stats: for accuracies a t-interval on the logit scale, "
              "mapped back, so it stays inside [0, 1]); 'N seeds tie' means every seed gave the same value; one seed "
              "shows no interval.")
HEADERS = {  # metrics column names whose readable form is more than the name with spaces
    "dim": "features", "test_recon_mse": "test reconstruction MSE", "test_kl": "test KL (nats)",
    "test_active_units": "active units", "test_partner_top1": "test partner top-1",
    "train_seconds": "training time (s)", "pca90": "PCA dims for 90% variance", "twonn": "TwoNN dimension",
    "seconds": "time (s)", "kmeans_nmi": "k-means NMI", "kmeans_ari": "k-means ARI",
    "silhouette": "class silhouette", "umap_trustworthiness": "UMAP trustworthiness",
}


def header(column: str) -> str:
    """A readable column header for a metrics column name."""
    return HEADERS.get(column, column.replace("_", " "))


def format_column(values: pd.Series, decimals: int) -> pd.Series:
    """Whole numbers without decimals; other numbers with ``decimals`` places; booleans as yes/no; text as it
    is; '–' if missing."""
    missing = values.isna()
    if pd.api.types.is_bool_dtype(values):
        return values.map({True: "yes", False: "no"}).astype(object).where(~missing, "–")
    numeric = values
    if not pd.api.types.is_numeric_dtype(values):  # text (already formatted, or a mix): shown as written
        return pd.Series([("–" if m else str(v)) for v, m in zip(values, missing)], index=values.index, dtype=object)
    finite = numeric.dropna()
    whole = len(finite) > 0 and all(float(v).is_integer() for v in finite)
    return pd.Series([("–" if math.isnan(float(v)) else (f"{int(v)}" if whole else f"{float(v):.{decimals}f}"))
                      for v in numeric], index=values.index, dtype=object)


DECIMALS = {"train_seconds": 1, "seconds": 1, "pca90": 0, "participation_ratio": 1, "twonn": 1}


def format_frame(frame: pd.DataFrame, decimals: int | dict[str, int] = 3) -> pd.DataFrame:
    """Every column formatted (``format_column``) and given a readable header."""
    out = pd.DataFrame(index=frame.index)
    for column in frame.columns:
        places = decimals.get(column, DECIMALS.get(str(column), 3)) if isinstance(decimals, dict) else \
            DECIMALS.get(str(column), decimals)
        out[header(str(column))] = format_column(frame[column], places)
    return out


def table(frame: pd.DataFrame, name: str | None = None, run: RunArtifacts | None = None,
          decimals: int | dict[str, int] = 3) -> dict[str, Any]:
    """A table for the template; with ``name`` and ``run`` also written as tables/<name>.csv and .tex."""
    shown = format_frame(frame, decimals)
    if name and run is not None:
        run.export(layout.table(name, "csv"), shown.to_csv(index=False).encode("utf-8"))
        run.export(layout.table(name, "tex"), to_latex(shown).encode("utf-8"))
    return {"columns": list(shown.columns), "rows": shown.values.tolist()}


def figure(fig: Any, name: str | None = None, run: RunArtifacts | None = None) -> str:
    """A figure as an embedded PNG; with ``name`` and ``run`` also written as figures/<name>.png, .svg and .pdf."""
    png, bbox = plots.png_and_bbox(fig)
    if name and run is not None:
        if "png" in run.figure_formats:
            run.export(layout.figure(name, "png"), png)
        if {"svg", "pdf"} & set(run.figure_formats):
            run.vector_exports.submit(fig, run.run_dir, name, [f for f in ("svg", "pdf") if f in run.figure_formats],
                                      bbox)
    plots.plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


_LATEX_SPECIAL = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
                  "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}"}


def latex_escape(text: str) -> str:
    escaped = re.sub(r"[&%$#_{}~^\\]", lambda m: _LATEX_SPECIAL[m.group()], str(text))
    return escaped.replace("±", r"$\pm$").replace("×", r"$\times$").replace("–", "--")


def to_latex(frame: pd.DataFrame) -> str:
    """A booktabs tabular of the (already formatted) table."""
    align = "".join("l" if i == 0 else "r" for i in range(len(frame.columns)))
    lines = [r"\begin{tabular}{" + align + "}", r"\toprule",
             " & ".join(latex_escape(c) for c in frame.columns) + r" \\", r"\midrule"]
    lines += [" & ".join(latex_escape(v) for v in row) + r" \\" for row in frame.astype(str).values.tolist()]
    lines += [r"\bottomrule", r"\end{tabular}", ""]
    return "\n".join(lines)

