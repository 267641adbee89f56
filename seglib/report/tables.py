"""Tables formatted for reading: the one implementation both renderers show (through the notebooks).

A study's table stays a plain DataFrame of raw numbers (written as CSV by the session); what a page
shows is :func:`display_table` of it, a pandas ``Styler`` with

- no index column;
- numbers to 3 significant digits (values in a column that lies in [0, 1] with 3 decimals, integers
  as integers with thousands separators, never more than 4 decimals; p-values below 0.001 as
  "< 0.001");
- a mean and its 95 % CI in one cell, "0.803 [0.783, 0.820]": a column ``X`` with companions
  ``X`` + :data:`CI_LOW` and ``X`` + :data:`CI_HIGH` (see :func:`ci_columns`) is shown as one column
  "X [95 % CI]";
- "—" for what does not apply (NaN, None, empty);
- the best value of each metric column in bold (higher is better for Dice/DSC, precision, recall,
  F1, IoU; lower for volume differences and HD95; :func:`best_direction`), by the raw value; losses
  are not ranked (the values of different loss functions are on different scales);
- the headers as given (the tables name their units: "(s)", "(MiB)", "ml").

:func:`markdown_table` writes the same cells as a pipe table (the generated index and provenance
pages), so a number reads the same wherever it appears.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Mapping

import numpy as np
import pandas as pd

from seglib.eval.tables import CI_HIGH, CI_LOW, ci_columns  # noqa: E402  (the raw tables' convention)

CI_SUFFIX = " [95 % CI]"
MISSING = "—"
MAX_DECIMALS = 4

_HIGHER = re.compile(r"\b(dice|dsc|precision|recall|f1|iou)\b", re.IGNORECASE)
_LOWER = re.compile(r"(volume diff|hd95)", re.IGNORECASE)
# columns that are not a measurement of this build to rank: the seed's numbers, tests, counts, settings
_NOT_RANKED = re.compile(r"(seed|\bp\b|p \(|wilcoxon|difference|effect|ratio|cases|runs|epoch|lr\b|batch|"
                         r"threshold|parameters|time|memory)", re.IGNORECASE)


def _is_missing(x) -> bool:
    if x is None:
        return True
    if isinstance(x, str):
        return x.strip() == ""
    try:
        return bool(pd.isna(x))
    except (TypeError, ValueError):
        return False


def format_number(x, *, unit_interval: bool = False, p_value: bool = False, digits: int = 3) -> str:
    """One number as the tables print it (see the module docstring); "—" when missing."""
    if _is_missing(x):
        return MISSING
    if isinstance(x, (bool, np.bool_)):
        return "yes" if x else "no"
    if isinstance(x, str):
        return x
    if isinstance(x, (int, np.integer)):
        return f"{int(x):,}"
    x = float(x)
    if math.isinf(x):
        return "∞" if x > 0 else "−∞"
    if p_value:
        return "< 0.001" if 0 < x < 0.001 else f"{x:.3f}"
    if unit_interval:
        return f"{x:.{digits}f}"
    a = abs(x)
    if a == 0:
        return "0"
    if a >= 10 ** (digits - 1):
        return f"{x:,.0f}"
    decimals = digits - 1 - math.floor(math.log10(a))
    if decimals > MAX_DECIMALS:
        return f"{x:.{MAX_DECIMALS}f}" if a >= 10 ** -MAX_DECIMALS else f"{x:.{digits - 1}e}"
    return f"{x:.{decimals}f}"


def best_direction(column: str) -> str | None:
    """``"max"``, ``"min"`` or ``None`` (not ranked) for a column by its header."""
    if _NOT_RANKED.search(column):
        return None
    if _HIGHER.search(column):
        return "max"
    if _LOWER.search(column):
        return "min"
    return None


def _column_kind(name: str, s: pd.Series) -> dict:
    numbers = [x for x in s if not isinstance(x, (str, bool, np.bool_)) and not _is_missing(x)]
    finite = np.array([float(x) for x in numbers if math.isfinite(float(x))])
    is_int = len(finite) > 0 and (all(isinstance(x, (int, np.integer)) for x in numbers) or (
        bool(np.all(np.mod(finite, 1) == 0)) and not _HIGHER.search(name) and not (finite <= 1).all()))
    unit = (len(finite) > 0 and not is_int and bool(((finite >= 0) & (finite <= 1)).all())
            and not re.search(r"\bp\b|p \(|wilcoxon", name, re.IGNORECASE))
    return {"int": is_int, "unit": unit, "p": bool(re.search(r"(^p\b|\bp \(|\bp$|wilcoxon p|p-value)", name,
                                                              re.IGNORECASE))}


def _cells(df: pd.DataFrame, digits: int = 3, best: Mapping[str, str | None] | None = None):
    """``(strings, bold, headers)``: the display cells, a same-shaped bool frame and the shown headers."""
    df = df.reset_index(drop=True)
    cols = list(df.columns)
    companions = {c for name in cols for c in ci_columns(name) if c in cols
                  and all(x in cols for x in ci_columns(name))}
    strings, bold = {}, {}
    for name in cols:
        if name in companions:
            continue
        s = df[name]
        low, high = ci_columns(name)
        with_ci = low in cols and high in cols
        kind = _column_kind(name, pd.concat([s, df[low], df[high]]) if with_ci else s)
        def one(x, kind=kind):
            if kind["int"] and not _is_missing(x) and not isinstance(x, str):
                return format_number(int(round(float(x))))
            return format_number(x, unit_interval=kind["unit"], p_value=kind["p"], digits=digits)
        if with_ci:
            shown = [MISSING if _is_missing(m) else f"{one(m)} [{one(lo)}, {one(hi)}]"
                     for m, lo, hi in zip(s, df[low], df[high])]
            header = name + CI_SUFFIX
        else:
            shown = [one(x) for x in s]
            header = name
        direction = best[name] if best and name in best else best_direction(name)
        flags = [False] * len(s)
        numeric = pd.to_numeric(s, errors="coerce").astype(float)
        if direction in ("max", "min") and numeric.notna().sum() > 1 and numeric.nunique() > 1:
            target = numeric.max() if direction == "max" else numeric.min()
            flags = [bool(v == target) for v in numeric]
        strings[header], bold[header] = shown, flags
    return pd.DataFrame(strings), pd.DataFrame(bold), list(strings)


class ReadableTable:
    """What a notebook cell displays for a table: HTML (a pandas ``Styler``) and a plain-text fallback."""

    def __init__(self, df: pd.DataFrame, *, uuid: str = "t", digits: int = 3, best=None, wide: bool | None = None):
        self.raw = df
        self.cells, self.bold, self.headers = _cells(df, digits, best)
        self.uuid = re.sub(r"[^A-Za-z0-9_]", "_", uuid)
        self.wide = len(self.headers) > 7 if wide is None else wide

    def styler(self):
        """The pandas ``Styler``: no index, bold best values, the table classes of both renderers."""
        bold = self.bold
        styler = self.cells.style
        styler.uuid = self.uuid
        styler = (styler.hide(axis="index")
                  .apply(lambda _: np.where(bold.to_numpy(), "font-weight: bold", ""), axis=None)
                  .set_table_attributes('class="seglib-table dataframe table table-sm"'))
        return styler

    def to_html(self) -> str:
        return self.styler().to_html()

    def _repr_html_(self) -> str:
        return self.to_html()

    def to_markdown(self) -> str:
        return markdown_table(self.headers, [[("**" + v + "**") if b and v != MISSING else v
                                              for v, b in zip(row, brow)]
                                             for row, brow in zip(self.cells.to_numpy().tolist(),
                                                                  self.bold.to_numpy().tolist())])

    def __repr__(self) -> str:
        return self.cells.to_string(index=False)


def display_table(df: pd.DataFrame, *, uuid: str = "t", digits: int = 3, best=None) -> ReadableTable:
    """``df`` for display (see the module docstring); ``best`` maps a column to "max"/"min"/None."""
    return ReadableTable(df, uuid=uuid, digits=digits, best=best)


def markdown_cell(value) -> str:
    """A pipe-table cell: numbers as :func:`format_number`, HTML-escaped, one line, no bare '|'."""
    if _is_missing(value):
        return MISSING
    if not isinstance(value, str):
        value = format_number(value, p_value=False)
    text = " ".join(str(value).split())
    return html.escape(text, quote=False).replace("|", "&#124;")


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A pipe table of already formatted cells."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


__all__ = ["CI_LOW", "CI_HIGH", "ci_columns", "format_number", "best_direction", "display_table",
           "ReadableTable", "markdown_cell", "markdown_table"]
