"""Date and time columns of a table as features: when a row happened, as numbers a model can use.

A date (a Parquet timestamp, a CSV's 2026-01-05 or 2026-01-05T10:30:00Z, which the readers parse) becomes
7 features: the days since 1970 (the trend) and, as a sine and a cosine each (so December sits next to
January, Sunday next to Monday), where it falls in the year, the week and the day. A time with a zone is
read in UTC. A blank date is 7 blank features, filled as any blank number is (blanks.py). Training,
`evaluate --data` and the endpoint (which takes the date as ISO 8601 text) all compute them here.
"""

from __future__ import annotations

import datetime
import re

import numpy as np

from orchestrator.errors import DataError

PARTS = ("days", "year_sin", "year_cos", "week_sin", "week_cos", "day_sin", "day_cos")
DAYS_PER_YEAR = 365.2425  # the Gregorian year's mean length
ISO_DATE = re.compile(r"\s*\d{4}-\d{2}-\d{2}")  # a year, month and day, as ISO 8601 writes them (not 20260105)


def feature_names(column: str) -> list[str]:
    return [f"{column}.{part}" for part in PARTS]


def read_iso(values: np.ndarray) -> np.ndarray | None:
    """datetime64[s] of a column of text that holds ISO 8601 dates only (and blanks), else None: a column that
    a CSV reader left as text, its dates written in more than one form (2026-03-01 and 2026-01-05T10:30:00Z)."""
    if not any(v.strip() for v in values) or not all(ISO_DATE.match(v) for v in values if v.strip()):
        return None
    try:
        return as_dates(values, "")
    except DataError:  # 2026-13-45
        return None


def as_dates(values: np.ndarray, column: str) -> np.ndarray:
    """datetime64[s] of a column of dates: as read (datetime64), or ISO 8601 text and nulls (NaT), as a file
    whose column the reader did not take for dates gives them."""
    if values.dtype.kind == "M":
        return values.astype("datetime64[s]")
    try:
        return np.array([_parse(v) for v in values], dtype="datetime64[s]")
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


def parse(value, what: str) -> np.datetime64:
    """A request's date: ISO 8601 text ("2026-01-05", "2026-01-05T10:30:00Z"); ValueError naming `what`."""
    if not isinstance(value, str):
        raise ValueError(f"{what} takes a date as text, such as \"2026-01-05\" or \"2026-01-05T10:30:00Z\"")
    try:
        return np.datetime64(_parse(value), "s")
    except ValueError:
        raise ValueError(f"{what}: {value!r} is not a date: send ISO 8601, such as \"2026-01-05\" or "
                         "\"2026-01-05T10:30:00Z\"") from None


def _parse(value) -> datetime.datetime | None:
    if value is None or (isinstance(value, float) and value != value) or (isinstance(value, str) and not value.strip()):
        return None  # a blank cell
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a date")
    try:
        parsed = datetime.datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(f"{value!r} is not an ISO 8601 date") from None
    if parsed.tzinfo is not None:  # as the readers read a zoned time: in UTC
        parsed = parsed.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    return parsed
