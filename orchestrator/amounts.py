"""Numbers that a table writes as text: amounts and shares as spreadsheets export them.

$1,234.50, €3.99, -$12, ($12.00), 1,250,000 and 12.5% are numbers (1234.5, 3.99, -12, -12, 1250000, 12.5), as
spreadsheets write them (a negative amount in parentheses, as accountants write it), but a CSV reader
takes such a column for text, which would make each amount a category of its own, or refuse the column as one
that names rows. A column of text whose every cell is a number written in one form (the same currency sign
before it, or % after it, or thousands separated by commas) is read as numbers: a number feature, normalized
and, where a cell is blank, filled, as any number column. Its form is kept (model_info `written_forms`), so
`evaluate --data` and the endpoint read the column the same way; they take a plain number too.

A comma separates thousands only in groups of three digits (1,234,567). Amounts as comma-decimal locales write
them (1.234,50 €, € 3,99, 12,5 %, 1 234,50) are read with a decimal comma where some cell of the column shows
it: a currency sign or % beside a comma decimal, or thousands before one; 1,5 and 2,25 alone are not numbers
here, as a reader of a comma-separated file could not tell them from lists. (A CSV with semicolons between its
cells and decimal commas is read as numbers before it gets here: tablefiles.csv_dialect.) Plain digits (02134,
a zip code) stay text, as before: no sign, no comma, nothing tells they are amounts.
"""

from __future__ import annotations

import re

import numpy as np

from orchestrator.errors import DataError

CURRENCIES = "$€£¥₹"
WRITTEN = re.compile(r"\s*(?P<minus>[-(]?)\s*(?P<prefix>[" + CURRENCIES + r"]?)\s*(?P<minus2>-?)\s*"
                     r"(?P<number>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)\s*(?P<suffix>%?)\s*"
                     r"(?P<close>\)?)\s*")
# As comma-decimal locales write them: 1.234,50 €, € 3,99, 12,5 %, 1 234,50 (a space, or a no-break one, between
# thousands, as in French)
COMMA_WRITTEN = re.compile(r"\s*(?P<minus>[-(]?)\s*(?P<prefix>[" + CURRENCIES + r"]?)\s*(?P<minus2>-?)\s*"
                           r"(?P<number>\d{1,3}(?:[. \u00a0\u202f]\d{3})+(?:,\d+)?|\d+(?:,\d+)?|,\d+)\s*"
                           r"(?P<suffix>[%" + CURRENCIES + r"]?)\s*(?P<close>\)?)\s*")
PLACE = "#"  # where the number goes in a form: "$#", "#%", "#" (thousands separated)
COMMA_PLACE = "#,#"  # where a number written with a decimal comma goes: "#,# €", "#,#%"
THOUSANDS_AND_DECIMALS = re.compile(r"\d[. \u00a0\u202f]\d{3},\d")  # 1.234,5: no point-decimal reading has it


def read_cell(cell: str, comma: bool = False) -> tuple[float, str] | None:
    """(the number, its form) of a cell of text, or None; with `comma`, as written with a decimal comma."""
    m = (COMMA_WRITTEN if comma else WRITTEN).fullmatch(cell)
    if m is None or (m["minus"] and m["minus2"]) or (m["minus"] == "(") != bool(m["close"]):
        return None  # --5, or a parenthesis not closed
    sign = -1.0 if m["minus"] or m["minus2"] else 1.0
    if not comma:
        return sign * float(m["number"].replace(",", "")), m["prefix"] + PLACE + m["suffix"]
    if m["prefix"] and m["suffix"]:
        return None  # €5€
    number = re.sub(r"[. \u00a0\u202f]", "", m["number"]).replace(",", ".")
    suffix = " " + m["suffix"] if m["suffix"] in CURRENCIES and m["suffix"] else m["suffix"]
    return sign * float(number), m["prefix"] + COMMA_PLACE + suffix


def read_text(values: np.ndarray) -> tuple[np.ndarray, str] | None:
    """(float64 numbers, NaN where blank; the form) of a column of text whose every cell is a number written
    in one form with a currency sign, % or thousands commas; else None. Or with a decimal comma, where some cell
    shows it: a currency sign or % (3,99 €), or thousands before it (1.234,50). Where both readings fit every
    cell ($1,234), the decimal point's is taken."""
    cells = values.tolist()  # Python strs: per distinct cell below, not per cell of a million rows
    distinct = set(cells)
    filled = {v.strip() for v in distinct if v.strip()}
    if not filled:
        return None
    for comma in (False, True):
        read = {cell: read_cell(cell, comma) for cell in filled}
        forms = {r[1] for r in read.values() if r is not None}
        if None in read.values() or len(forms) > 1:
            continue  # not a number, or two forms ($5 and 5%)
        form = forms.pop()
        if not comma and form == PLACE and not any("," in cell for cell in filled):
            continue  # plain digits (02134: text, as before)
        if comma and not any(_shows_comma(cell, form) for cell in filled):
            continue  # 1,5 and 2,25 alone: a list, as like as not
        number = {v: read[v.strip()][0] if v.strip() else np.nan for v in distinct}
        return np.array([number[v] for v in cells]), form
    return None


def is_amount(cell: str) -> bool:
    """Whether a cell alone is a number as `read_text` reads a column of them."""
    return read_cell(cell) is not None or ((read := read_cell(cell, comma=True)) is not None
                                           and _shows_comma(cell, read[1]))


def _shows_comma(cell: str, form: str) -> bool:
    """Whether a cell read with a decimal comma, in `form`, shows that comma to be one: a sign or %, or thousands."""
    return form != COMMA_PLACE or THOUSANDS_AND_DECIMALS.search(cell) is not None


def example(form: str) -> str:
    """A number written in `form`, for messages."""
    return form.replace(COMMA_PLACE, "1.234,5") if COMMA_PLACE in form else form.replace(PLACE, "1,234.5")


def parse(value, form: str) -> float:
    """A number, or text in `form` (or a plain number written as in it): ValueError otherwise."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    comma = COMMA_PLACE in form
    if isinstance(value, str) and (read := read_cell(value, comma)) is not None and read[1] in (
            form, COMMA_PLACE if comma else PLACE):
        return read[0]
    shown = "null" if value is None else repr(value)
    raise ValueError(f"{shown} is not a number written as {example(form)!r} (or 1234.5)")


def as_numbers(values: np.ndarray, column: str, form: str) -> np.ndarray:
    """float64 of a column that a model read as numbers written in `form`: such text, numbers, blanks (NaN)."""
    if values.dtype.kind in "iuf":
        return values.astype(np.float64)
    out = np.empty(len(values))
    for i, v in enumerate(values):
        blank = v is None or (isinstance(v, float) and v != v) or (isinstance(v, str) and not v.strip())
        try:
            out[i] = np.nan if blank else parse(v, form)
        except ValueError as e:
            raise DataError(f"column {column!r} holds numbers written as {example(form)!r} in training, and "
                            f"here {e}") from None
    return out
