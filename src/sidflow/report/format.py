"""How the report writes numbers and tables: one formatter for every number on the page.

num(0.91234)            -> "0.912"
num(0.0123, 4, sign=True) -> "+0.0123"
num(None), num(nan)     -> "–"
num(42)                 -> "42"
ci(0.81, 0.93)          -> "[0.810, 0.930]"
"""

from __future__ import annotations

import html
import math
import numbers
from collections.abc import Sequence

import numpy as np
import pandas as pd

MISSING = "–"


def is_missing(v) -> bool:
    """None, NaN, pandas' NA/NaT."""
    if v is None or v is pd.NA or v is pd.NaT:
        return True
    return isinstance(v, numbers.Real) and not isinstance(v, numbers.Integral) and math.isnan(v)


def num(v, digits: int = 3, sign: bool = False) -> str:
    """The report's one number formatter, HTML-safe.

    Missing values show as ``–``; real numbers (Python or NumPy floats) with ``digits``
    decimals (and a ``+`` for positive ones when ``sign``); integers as they are; booleans
    as ``True``/``False``; anything else as escaped text.
    """
    if is_missing(v):
        return MISSING
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, numbers.Integral):
        return f"{int(v):{'+' if sign else ''}d}"
    if isinstance(v, numbers.Real):
        return f"{float(v):{'+' if sign else ''}.{digits}f}"
    return html.escape(str(v))


def ci(low, high, digits: int = 3) -> str:
    """An interval ``[low, high]``; ``–`` when it was not computed."""
    return MISSING if is_missing(low) else f"[{num(low, digits)}, {num(high, digits)}]"


def table(
    df: pd.DataFrame,
    left: tuple[str, ...] = (),
    digits: int = 3,
    row_class: Sequence[str] | None = None,
) -> str:
    """A plain HTML table; the ``left`` columns (text) are left-aligned, numbers right.
    ``row_class``: a CSS class per row (``""`` for none), e.g. ``small`` for a row resting on
    too few images."""
    cls = {c: "l" if c in left else "" for c in df.columns}
    head = "".join(f'<th class="{cls[c]}">{html.escape(str(c))}</th>' for c in df.columns)
    classes = list(row_class) if row_class is not None else [""] * len(df)
    body = "".join(
        (f'<tr class="{html.escape(k)}">' if k else "<tr>")
        + "".join(
            f'<td class="{cls[c]}">{num(v, digits)}</td>'
            for c, v in zip(df.columns, row, strict=True)
        )
        + "</tr>"
        for row, k in zip(df.itertuples(index=False), classes, strict=True)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
