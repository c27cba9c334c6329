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


def table_features(columns: list[str], categories: dict[str, list[str]] | None, dated: list[str] | None,
                   text: tuple[str, int] | None = None) -> list[tuple[str, str]]:
    """Each feature of a table, in order, as (its column, its name): the column for a number, 'column=category'
    for a category's 0/1 feature, 'column.part' for a date's (dates.py), 'column[i]' for byte i of a column of
    free text (`text`: the column and its bytes, byte_text.py)."""
    categories, dated = categories or {}, dated or []

    def names(c: str) -> list[str]:
        if text and c == text[0]:
            return [f"{c}[{i}]" for i in range(text[1])]
        return [f"{c}={k}" for k in categories[c]] if c in categories else dates.feature_names(c) if c in dated else [c]

    return [(c, name) for c in columns for name in names(c)]


def features_of(info: dict) -> list[tuple[str, str]]:
    """table_features of the table a model's model_info (or data.Splits.info()) describes; [] for other data."""
    text = (info["text_column"], info["text_bytes"]) if info.get("text_bytes") else None
    return table_features(info.get("feature_columns") or [], info.get("categories"), info.get("dates"), text)


def find(x: np.ndarray, train_rows: np.ndarray, features: list[tuple[str, str]]) -> dict | None:
    """The blank features of table features x [N, F] (NaN where a cell is blank; `features`: table_features)
    and what fills them: their index, name and median over the training rows; and their columns, each with
    the index of the feature whose blanks its 0/1 flag follows. None when no cell is blank."""
    blank = np.flatnonzero(np.isnan(x).any(axis=0))
    if not len(blank):
        return None
    train = x[train_rows][:, blank]
    if empty := list(dict.fromkeys(features[i][0] for i, seen in zip(blank, (~np.isnan(train)).any(axis=0),
                                                                      strict=True) if not seen)):
        raise DataError(f"columns {empty} are blank in every training row: nothing to learn from or fill them "
                        "with; leave them out with data.feature_columns")
    flags = {}  # a column's features are blank together (a date's 7): one flag per column
    for i in blank:
        flags.setdefault(features[i][0], int(i))
    # float32 medians, as the model holds them, written as their shortest digits (45.05, not 45.04999923706055)
    fill = [float(str(v)) for v in np.nanmedian(train, axis=0).astype(np.float32)]
    return {"index": blank.tolist(), "features": [features[i][1] for i in blank], "fill": fill,
            "columns": list(flags), "flags": list(flags.values()),
            "blank_rows": [int(np.isnan(x[:, i]).sum()) for i in flags.values()]}


def notice(blanks: dict, num_rows: int) -> str:
    cells = ", ".join(f"{c!r} {n:,}" for c, n in zip(blanks["columns"], blanks["blank_rows"], strict=True))
    return (f"data: blank cells in {len(blanks['columns'])} column(s) of {num_rows:,} rows ({cells}): each filled "
            "with its column's median over the training rows, and a 0/1 feature per column says which rows were "
            "blank (data.fill_blanks: false refuses them instead)")


class FillBlanks(nn.Module):
    """[B, F] features with NaN in the blank features -> [B, F + k]: the blanks filled, then k 0/1 features,
    one per column with blanks, 1 where it was blank."""

    def __init__(self, blanks: dict):
        super().__init__()
        self.register_buffer("index", torch.tensor(blanks["index"], dtype=torch.int64))
        self.register_buffer("fill", torch.tensor(blanks["fill"], dtype=torch.float32))
        self.register_buffer("flags", torch.tensor(blanks["flags"], dtype=torch.int64))

    def forward(self, x):
        part = x[:, self.index]
        filled = x.index_copy(1, self.index, torch.where(torch.isnan(part), self.fill.to(x.dtype), part))
        return torch.cat([filled, torch.isnan(x[:, self.flags]).to(x.dtype)], dim=1)


def fill_numpy(x: np.ndarray, blanks: dict) -> np.ndarray:
    """What FillBlanks gives, for statistics over the training rows (data.channel_stats)."""
    with torch.no_grad():
        return FillBlanks(blanks)(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()


def unfilled(x: np.ndarray, blanks: dict | None, features: list[tuple[str, str]]) -> list[str]:
    """The columns of x [N, F] (`features`: table_features) with blank cells that the model does not fill (it
    saw them whole in training)."""
    filled = set(blanks["index"]) if blanks else set()
    return list(dict.fromkeys(features[i][0] for i in np.flatnonzero(np.isnan(x).any(axis=0)) if i not in filled))
