"""Text columns of a table as model inputs: one 0/1 feature per category (one-hot).

Training lists each text column's categories (every value the data holds, sorted; a blank cell is the
category "") and the checkpoint keeps the lists. Evaluation on other data and the endpoint encode with
those lists, so a value turns on the same feature in all three. A value that training never saw turns
on none, as scikit-learn's OneHotEncoder(handle_unknown="ignore") does. A column that is not categories is
refused: one whose values name rows (ids, names), one of numbers with a few cells of text.
"""

from __future__ import annotations

import json

import numpy as np

from orchestrator.amounts import is_amount
from orchestrator.errors import DataError

MAX_CATEGORIES = 1000  # per column: beyond, one-hot features outnumber what a table model can learn from


def texts(values) -> np.ndarray:
    """A column's cells as text: a blank cell (null, NaN) is ""; a number read where another file held text
    is its digits, so that it matches a category listed from that file."""
    return np.array(["" if v is None or v != v else v.decode() if isinstance(v, bytes) else str(v) for v in values],
                    dtype=str)  # v != v: NaN, pandas' blank


def categories_of(values: np.ndarray) -> list[str]:
    return sorted(set(values.tolist()))


def look_alike(values: list[str]) -> list[list[str]]:
    """Groups of values that differ only in case or in spaces around them ('Yes', 'yes ', 'YES'): typed by hand
    apart, most likely, one value meant, but different categories or classes to a model."""
    groups: dict[str, list[str]] = {}
    for value in values:
        groups.setdefault(value.strip().casefold(), []).append(value)
    return [group for group in groups.values() if len(group) > 1]


def names_rows(categories: list[str], num_rows: int) -> bool:
    """Whether a text column has so many values that they name rows (ids, names, free text), not categories."""
    return len(categories) > MAX_CATEGORIES or (len(categories) > 20 and len(categories) > num_rows / 2)


def sentence_words(categories: list[str]) -> int | None:
    """The median count of words of a text column's categories when they are sentences (reviews, messages: 4
    words or more), which a model of text reads better than as categories; else None. "New York" or "Senior
    Software Engineer" are categories."""
    words = int(np.median([len(c.split()) for c in categories])) if categories else 0
    return words if words >= 4 else None


def one_hot(values: np.ndarray, categories: list[str]) -> np.ndarray:
    """[N, K] float32 for N cells of text and K categories: 1 at the cell's category, 0 elsewhere."""
    known = np.array(categories, dtype=str)
    at = np.searchsorted(known, values)  # the categories are sorted
    found = at < len(known)
    found[found] = known[at[found]] == values[found]
    out = np.zeros((len(values), len(known)), np.float32)
    out[np.flatnonzero(found), at[found]] = 1
    return out


def check_not_numbers(column: str, values: np.ndarray) -> None:
    """A column of numbers (or amounts, $1,234.50: amounts.py) with a few cells of text ("?", "unknown") reads
    as text, and would become a category per number: name those cells instead. A column whose every value is
    digits stays text (zip codes stored as text: categories)."""
    distinct, counts = np.unique(values[values != ""], return_counts=True)
    numeric = np.array([is_number(v) or is_amount(v) for v in distinct], dtype=bool)
    if numeric.any() and not numeric.all() and counts[numeric].sum() >= 0.9 * counts.sum():
        marks = [str(v).strip() for v in distinct[~numeric][:3]]
        odd, cells = ", ".join(map(repr, marks)), int(counts[~numeric].sum())
        raise DataError(f"column {column!r} holds numbers, and text in {cells} cell{'s' * (cells > 1)} ({odd}), so "
                        f"it reads as text: where {'they mark' if len(marks) > 1 else 'it marks'} a missing value, "
                        f"set data.blank_values: {json.dumps(marks)} (the model fills a blank cell: data.fill_blanks); "
                        "else write those cells as numbers, or leave the column out with data.feature_columns")


def is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
