"""Blank cells of a table's numeric columns (a CSV's empty field, a null): filled, and said so.

Real tables have them: an age nobody wrote down, a reading a sensor missed. With data.fill_blanks (the
default) a blank cell of a numeric column stays NaN in the data, and the model itself fills it: with
the column's median over the training rows, and a 0/1 feature per such column that says which rows
were blank, so the model can learn from a cell being blank too (fastai's FillMissing; scikit-learn's
SimpleImputer with add_indicator). The fill is a module of the model (its values buffers in the
safetensors file), so training, `evaluate --data`, the endpoint (a `null` for such a column) and any
copy of the model fill alike. The columns that training saw blank are the ones that are filled:
a blank elsewhere is refused, by name, as training never learnt what it would mean.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from orchestrator import dates
from orchestrator.errors import DataError


def feature_names(columns: list[str], categories: dict[str, list[str]] | None, dated: list[str] | None) -> list[str]:
    """The name of each feature of a table: its column, 'column=category' for a category's 0/1 feature, or
    'column.part' for a date's (dates.py)."""
    categories, dated = categories or {}, dated or []

    def names(c: str) -> list[str]:
        return [f"{c}={k}" for k in categories[c]] if c in categories else dates.feature_names(c) if c in dated else [c]

    return [name for c in columns for name in names(c)]


def find(x: np.ndarray, train_rows: np.ndarray, names: list[str]) -> dict | None:
    """The blank features of table features x [N, F] (NaN where a cell is blank) and what fills them: their
    index, column name and median over the training rows; None when no cell is blank."""
    blank = np.flatnonzero(np.isnan(x).any(axis=0))
    if not len(blank):
        return None
    train = x[train_rows][:, blank]
    if empty := [names[i] for i, seen in zip(blank, (~np.isnan(train)).any(axis=0), strict=True) if not seen]:
        raise DataError(f"columns {empty} are blank in every training row: nothing to learn from or fill them "
                        "with; leave them out with data.feature_columns")
    # float32 medians, as the model holds them, written as their shortest digits (45.05, not 45.04999923706055)
    fill = [float(str(v)) for v in np.nanmedian(train, axis=0).astype(np.float32)]
    return {"index": blank.tolist(), "columns": [names[i] for i in blank], "fill": fill,
            "blank_rows": np.isnan(x[:, blank]).sum(axis=0).tolist()}


def notice(blanks: dict, num_rows: int) -> str:
    cells = ", ".join(f"{c!r} {n:,}" for c, n in zip(blanks["columns"], blanks["blank_rows"], strict=True))
    return (f"data: blank cells in {len(blanks['columns'])} column(s) of {num_rows:,} rows ({cells}): each filled "
            "with its column's median over the training rows, and a 0/1 feature per column says which rows were "
            "blank (data.fill_blanks: false refuses them instead)")


class FillBlanks(nn.Module):
    """[B, F] features with NaN in the blank features -> [B, F + k]: the blanks filled, then k 0/1 features,
    one per blank feature, 1 where it was blank."""

    def __init__(self, blanks: dict):
        super().__init__()
        self.register_buffer("index", torch.tensor(blanks["index"], dtype=torch.int64))
        self.register_buffer("fill", torch.tensor(blanks["fill"], dtype=torch.float32))

    def forward(self, x):
        part = x[:, self.index]
        blank = torch.isnan(part)
        filled = x.index_copy(1, self.index, torch.where(blank, self.fill.to(x.dtype), part))
        return torch.cat([filled, blank.to(x.dtype)], dim=1)


def fill_numpy(x: np.ndarray, blanks: dict) -> np.ndarray:
    """What FillBlanks gives, for statistics over the training rows (data.channel_stats)."""
    with torch.no_grad():
        return FillBlanks(blanks)(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()


def unfilled(x: np.ndarray, blanks: dict | None, names: list[str]) -> list[str]:
    """The columns of x [N, F] with NaN that the model does not fill (it saw them whole in training)."""
    filled = set(blanks["index"]) if blanks else set()
    return [names[i] for i in np.flatnonzero(np.isnan(x).any(axis=0)) if i not in filled]
