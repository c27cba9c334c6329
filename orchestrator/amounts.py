"""Numbers that a table writes as text: amounts and shares as spreadsheets export them.

$1,234.50, €3.99, -$12, ($12.00), 1,250,000 and 12.5% are numbers (1234.5, 3.99, -12, -12, 1250000, 12.5), as
spreadsheets write them (a negative amount in parentheses, as accountants write it), but a CSV reader
takes such a column for text, which would make each amount a category of its own, or refuse the column as one
that names rows. A column of text whose every cell is a number written in one form (the same currency sign
before it, or % after it, or thousands separated by commas) is read as numbers: a number feature, normalized
and, where a cell is blank, filled, as any number column. Its form is kept (model_info `written_forms`), so
`evaluate --data` and the endpoint read the column the same way; they take a plain number too.

A comma separates thousands only in groups of three digits (1,234,567): 1,5 is not a number here, as a reader
of a comma-decimal file could not tell it from a list. Plain digits (02134, a zip code) stay text, as before:
no sign, no comma, nothing tells they are amounts.
"""

from __future__ import annotations

import re

import numpy as np

from orchestrator.errors import DataError

CURRENCIES = "$€£¥₹"
WRITTEN = re.compile(r"\s*(?P<minus>[-(]?)\s*(?P<prefix>[" + CURRENCIES + r"]?)\s*(?P<minus2>-?)\s*"
                     r"(?P<number>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)\s*(?P<suffix>%?)\s*"
                     r"(?P<close>\)?)\s*")
PLACE = "#"  # where the number goes in a form: "$#", "#%", "#" (thousands separated)


def read_cell(cell: str) -> tuple[float, str] | None:
    """(the number, its form) of a cell of text, or None."""
    m = WRITTEN.fullmatch(cell)
    if m is None or (m["minus"] and m["minus2"]) or (m["minus"] == "(") != bool(m["close"]):
        return None  # --5, or a parenthesis not closed
    sign = -1.0 if m["minus"] or m["minus2"] else 1.0
    return sign * float(m["number"].replace(",", "")), m["prefix"] + PLACE + m["suffix"]


def read_text(values: np.ndarray) -> tuple[np.ndarray, str] | None:
    """(float64 numbers, NaN where blank; the form) of a column of text whose every cell is a number written
    in one form with a currency sign, % or thousands commas; else None."""
    filled = {v.strip() for v in values if v.strip()}
    if not filled:
        return None
    read = {}
    for cell in filled:
        if (number := read_cell(cell)) is None:
            return None
        read[cell] = number
    forms = {form for _, form in read.values()}
    if len(forms) > 1 or (forms == {PLACE} and not any("," in cell for cell in filled)):
        return None  # two forms ($5 and 5%), or plain digits (02134: text, as before)
    return np.array([read[v.strip()][0] if v.strip() else np.nan for v in values]), forms.pop()


def example(form: str) -> str:
    """A number written in `form`, for messages."""
    return form.replace(PLACE, "1,234.5")


def parse(value, form: str) -> float:
    """A number, or text in `form`: ValueError otherwise."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and (read := read_cell(value)) is not None and read[1] in (form, PLACE):
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
