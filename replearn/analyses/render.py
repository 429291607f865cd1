"""Small helpers the analyses' report sections share: tables and figures in the template's form."""
from __future__ import annotations

from typing import Any

import pandas as pd

from .. import plots


def table(frame: pd.DataFrame) -> dict[str, Any]:
    """A DataFrame as the template's table (missing values shown as '–')."""
    return {"columns": [str(c) for c in frame.columns],
            "rows": frame.astype(object).where(frame.notna(), "–").values.tolist()}


def figure(fig: Any) -> str:
    """A matplotlib figure as an embedded PNG (the report loads nothing from the network)."""
    return plots.to_data_uri(fig)
