"""Date and time columns of a table as features: when a row happened, as numbers a model can use.

A date (a Parquet timestamp, a CSV's 2026-01-05 or 2026-01-05T10:30:00Z, which the readers parse, or text
in one of the forms spreadsheets and locales write, 1/5/2026, 05.01.2026, 5 Jan 2026, ...: see FORMS)
becomes 7 features: the days since 1970 (the trend) and, as a sine and a cosine each (so December sits next
to January, Sunday next to Monday), where it falls in the year, the week and the day. A time with a zone is
read in UTC. A blank date is 7 blank features, filled as any blank number is (blanks.py). Training,
`evaluate --data` and the endpoint (which takes the date as ISO 8601 text, or in the form its training data
wrote it) all compute them here.
"""

from __future__ import annotations

import datetime
import re

import numpy as np

from orchestrator.errors import DataError

PARTS = ("days", "year_sin", "year_cos", "week_sin", "week_cos", "day_sin", "day_cos")
DAYS_PER_YEAR = 365.2425  # the Gregorian year's mean length
ISO_DATE = re.compile(r"\s*\d{4}-\d{2}-\d{2}")  # a year, month and day, as ISO 8601 writes them (not 20260105)
# Dates as spreadsheets and locales write them (strptime forms), read where a column of text is not ISO 8601:
# the one form that every cell fits. Month first before day first, as pandas and US spreadsheets read 3/4/2026
# (data says so where every cell fits both). A form may have a time after it. No two-digit year after dots:
# 1.2.3 is a version.
FORMS = [f"{day}{time}" for day in (
    "%m/%d/%Y", "%d/%m/%Y", "%m/%d/%y", "%d/%m/%y", "%m-%d-%Y", "%d-%m-%Y", "%d.%m.%Y", "%Y/%m/%d",
    "%Y.%m.%d", "%d %b %Y", "%d-%b-%Y", "%d-%b-%y", "%b %d %Y", "%b %d, %Y", "%d %B %Y", "%B %d %Y", "%B %d, %Y",
) for time in ("", " %H:%M", " %H:%M:%S", " %I:%M %p", " %I:%M:%S %p")]
WRITTEN_DATE = re.compile(r"\s*(\d{1,4}[/.\- ]\d{1,2}|\d{1,2}[ \-][A-Za-z]{3}|[A-Za-z]{3,9} \d{1,2})")  # a cell's start
EXAMPLE = datetime.datetime(2026, 1, 5, 14, 30)


def feature_names(column: str) -> list[str]:
    return [f"{column}.{part}" for part in PARTS]


def read_text(values: np.ndarray) -> tuple[np.ndarray, str | None, list[str]] | None:
    """(datetime64[s], form, other forms that every cell fits too) of a column of text that holds dates only (and
    blanks), else None. The form: None for ISO 8601 (2026-01-05, 2026-01-05T10:30:00Z, mixed), else the
    strptime form of FORMS that every cell is written in. None for a column that is not all dates."""
    cells = values.tolist()  # Python strs: per distinct cell below, not per cell of a million rows
    distinct = set(cells)
    filled = sorted({v.strip() for v in distinct if v.strip()})
    if not filled:
        return None
    if all(ISO_DATE.match(v) for v in filled):
        try:
            return as_dates(values, ""), None, []
        except DataError:  # 2026-13-45
            return None
    if not all(WRITTEN_DATE.match(v) for v in filled):
        return None
    sample = filled[:: max(1, len(filled) // 50)]  # most forms fail on the first few cells of a sample
    fits = [form for form in FORMS if _fits(form, sample) and _fits(form, filled)]
    if not fits:
        return None
    read = {cell: datetime.datetime.strptime(cell, fits[0]) for cell in filled}
    # forms that every cell fits too and that read some cell as another date (day first, where month first is read)
    others = [form for form in fits[1:] if any(datetime.datetime.strptime(c, form) != d for c, d in read.items())]
    date = {v: read.get(v.strip()) for v in distinct}
    return np.array([date[v] for v in cells], dtype="datetime64[s]"), fits[0], others


def _fits(form: str, cells: list[str]) -> bool:
    try:
        for cell in cells:
            datetime.datetime.strptime(cell, form)
    except ValueError:
        return False
    return True


def example(form: str | None) -> str:
    """A date written in `form` (None: ISO 8601), for messages."""
    return EXAMPLE.strftime(form) if form else EXAMPLE.date().isoformat()


def as_dates(values: np.ndarray, column: str, form: str | None = None) -> np.ndarray:
    """datetime64[s] of a column of dates: as read (datetime64), or text and nulls (NaT), as a file whose column
    the reader did not take for dates gives them: ISO 8601, or `form` (the model's training data's, FORMS)."""
    if values.dtype.kind == "M":
        return values.astype("datetime64[s]")
    parsed = {}  # per distinct cell: a column of a million dates holds a few thousand days
    try:
        return np.array([parsed[v] if v in parsed else parsed.setdefault(v, _parse(v, form)) for v in values.tolist()],
                        dtype="datetime64[s]")
    except ValueError as e:
        raise DataError(f"column {column!r} holds dates in training, and here {e}") from None


def features(values: np.ndarray) -> np.ndarray:
    """float32 [N, 7] of N datetime64 values; NaN for NaT (a blank cell)."""
    blank = np.isnat(values)
    days = np.where(blank, 0, values.astype("datetime64[s]").astype(np.int64)) / 86_400
    angles = 2 * np.pi * np.stack([days / DAYS_PER_YEAR, (days + 3) / 7, days], axis=1)  # 1970-01-01: a Thursday
    out = np.column_stack([days, np.sin(angles[:, 0]), np.cos(angles[:, 0]), np.sin(angles[:, 1]),
                           np.cos(angles[:, 1]), np.sin(angles[:, 2]), np.cos(angles[:, 2])])
    out[blank] = np.nan
    return out.astype(np.float32)


def parse(value, what: str, form: str | None = None) -> np.datetime64:
    """A request's date: ISO 8601 text ("2026-01-05", "2026-01-05T10:30:00Z"), or text in `form` (its training
    data's); ValueError naming `what`."""
    such_as = f"\"{example(None)}\" or \"2026-01-05T10:30:00Z\"" + (f", or as in training, \"{example(form)}\""
                                                                   if form else "")
    if not isinstance(value, str):
        raise ValueError(f"{what} takes a date as text, such as {such_as}")
    try:
        return np.datetime64(_parse(value, form), "s")
    except ValueError:
        raise ValueError(f"{what}: {value!r} is not a date: send ISO 8601, such as {such_as}") from None


def _parse(value, form: str | None = None) -> datetime.datetime | None:
    if value is None or (isinstance(value, float) and value != value) or (isinstance(value, str) and not value.strip()):
        return None  # a blank cell
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a date")
    if form is not None:
        try:
            return datetime.datetime.strptime(value.strip(), form)
        except ValueError:
            pass  # ISO 8601, then
    try:
        parsed = datetime.datetime.fromisoformat(value.strip())
    except ValueError:
        written = f" or a date written as {example(form)!r}" if form else ""
        raise ValueError(f"{value!r} is not an ISO 8601 date{written}") from None
    if parsed.tzinfo is not None:  # as the readers read a zoned time: in UTC
        parsed = parsed.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    return parsed
