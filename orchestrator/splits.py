"""Train, validation and test splits: drawn at random (stratified by label), in order (text), or as the data
says, where a column names each row's split (data.split_column), a column orders the rows in time
(data.order_column), or the files or directories are named for their splits (train.csv and test.csv,
train/ and test/). A split is int8 per row, 0 train, 1 val, 2 test (data.Arrays.split)."""

from __future__ import annotations

import posixpath
import re

import numpy as np

from orchestrator import dates
from orchestrator.categories import texts
from orchestrator.config import FilesData
from orchestrator.datafiles import not_in_data
from orchestrator.errors import DataError
from orchestrator.tablefiles import blank_cells, holds_text


def split_indices(y: np.ndarray, val_fraction: float, test_fraction: float, seed: int):
    """Seeded train/val/test index arrays, stratified by label where every class allows it."""
    from sklearn.model_selection import train_test_split

    def split(stratify: bool):
        rest, test = train_test_split(np.arange(len(y)), test_size=test_fraction, random_state=seed,
                                      stratify=y if stratify else None)
        train, val = train_test_split(rest, test_size=val_fraction / (1 - test_fraction), random_state=seed,
                                      stratify=y[rest] if stratify else None)
        return np.sort(train), np.sort(val), np.sort(test)

    _, counts = np.unique(y, return_counts=True)
    try:
        try:
            return split(stratify=counts.min() >= 3)  # each class must reach all three splits
        except ValueError:  # a split too small to hold every class: split at random
            return split(stratify=False)
    except ValueError:  # a split would be empty
        raise DataError(f"{len(y)} rows are too few to split into train, val and test with data.val_fraction "
                        f"{val_fraction} and data.test_fraction {test_fraction}: add rows") from None


def ordered_split(n: int, val_fraction: float, test_fraction: float, what: str = "sequences",
                  fix: str = "add text or lower data.block_size"):
    """Train, val and test index ranges in order: the first rows train, the last rows test."""
    num_val, num_test = max(1, round(n * val_fraction)), max(1, round(n * test_fraction))
    if n - num_val - num_test < 1:
        raise DataError(f"{n} {what} are too few to split into train, val and test: {fix}")
    idx = np.arange(n)
    return idx[: n - num_val - num_test], idx[n - num_val - num_test : n - num_test], idx[n - num_test :]


def given_split(codes: np.ndarray, y: np.ndarray, val_fraction: float, test_fraction: float, seed: int):
    """Train, val and test indices as `codes` name them (0, 1, 2: data.Arrays.split); a split that holds no row
    is drawn from the train rows, by its fraction, as split_indices draws it."""
    train, val, test = (np.flatnonzero(codes == code) for code in range(3))
    if not len(val) and not len(test):
        return tuple(train[rows] for rows in split_indices(y[train], val_fraction, test_fraction, seed))
    if not len(val) or not len(test):
        fraction = test_fraction if len(val) else val_fraction
        try:
            kept, drawn = _draw(y[train], fraction, seed)
        except ValueError:
            raise DataError(f"{len(train)} rows named train are too few to draw the {'test' if len(val) else 'val'} "
                            "split from: name some rows for it, or add rows") from None
        train, val, test = (train[kept], val, train[drawn]) if len(val) else (train[kept], train[drawn], test)
    return train, val, test


def _draw(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(the rest, the drawn) indices of y, `fraction` of them drawn at random, stratified by label where every
    class allows it."""
    from sklearn.model_selection import train_test_split

    rows = np.arange(len(y))
    try:
        rest, drawn = train_test_split(rows, test_size=fraction, random_state=seed, stratify=y)
    except ValueError:  # a class of one row
        rest, drawn = train_test_split(rows, test_size=fraction, random_state=seed)
    return np.sort(rest), np.sort(drawn)


# t10k: MNIST's test files (t10k-images-idx3-ubyte), and Fashion-MNIST's and KMNIST's, named as MNIST's
SPLIT_NAMES = (("train", "training"), ("val", "valid", "validation", "dev"), ("test", "testing", "t10k"))


def named(cells: np.ndarray, source: str) -> np.ndarray:
    """data.Arrays.split of rows whose split `source` (a column, directories) names: train, val, test (SPLIT_NAMES)."""
    named = np.char.lower(np.char.strip(cells.astype(str)))
    codes = np.full(len(cells), -1, np.int8)
    for code, words in enumerate(SPLIT_NAMES):
        codes[np.isin(named, words)] = code
    if (odd := codes < 0).any():
        shown = ", ".join(repr(str(v)) for v in sorted(set(cells[odd]))[:4])
        raise DataError(f"{source} holds {shown} in {int(odd.sum()):,} rows: name each row's split train, val (or "
                        "validation) or test")
    if not (codes == 0).any():
        raise DataError(f"{source}: no row is in train, and the model needs rows to learn from")
    drawn = [split for code, split in ((1, "val"), (2, "test")) if not (codes == code).any()]
    print(f"data: each row in the split named by {source}"
          + (f"; {' and '.join(drawn)} drawn from the train rows (data.{'_fraction, data.'.join(drawn)}_fraction)"
             if drawn else ""), flush=True)
    return codes


def of_rows(columns: dict[str, np.ndarray], cfg: FilesData, rows: np.ndarray) -> np.ndarray | None:
    """Each row's split where the data says it (data.Arrays.split): data.split_column names it, or data.order_column
    orders the rows, the last ones the test split. None: drawn at random (split_indices). `rows`: the data's
    row of each, for messages."""
    name = cfg.split_column or cfg.order_column
    if name is None:
        return None
    if name not in columns:
        field = "split_column" if cfg.split_column else "order_column"
        raise not_in_data(f"data.{field} {name!r}", [name], list(columns), f"name a column in data.{field}")
    values = columns[name]
    if cfg.split_column:
        return named(texts(values) if holds_text(values) else values.astype(str),
                             f"data.split_column {name!r}")
    blank = blank_cells(values)
    if blank.any():
        raise DataError(f"data.order_column {name!r} is blank in {int(blank.sum()):,} rows (the first is row "
                        f"{rows[np.argmax(blank)] + 1}): each row needs its place in the order; fill them or leave "
                        "those rows out")
    if holds_text(values):
        read = dates.read_text(texts(values))
        if read is None:
            raise DataError(f"data.order_column {name!r} holds text that is not dates, such as "
                            f"{str(values[0])!r}: name a column of dates or times, or of numbers that grow with time")
        values = read[0]
    keys = values.astype("datetime64[s]").astype(np.int64) if values.dtype.kind == "M" else values.astype(np.float64)
    order = np.argsort(keys, kind="stable")
    codes = np.zeros(len(order), np.int8)
    _, val, test = ordered_split(len(order), cfg.val_fraction, cfg.test_fraction, "rows", "add rows")
    codes[order[val]], codes[order[test]] = 1, 2
    first = values[order[test[0]]]
    print(f"data: split in the order of column {name!r}: the test split is the last {len(test):,} rows (from "
          f"{str(first)[:19]!r}), validation the {len(val):,} before them", flush=True)
    return codes


WORDS = {name for names in SPLIT_NAMES for name in names}


def split_word(name: str) -> str | None:
    """The split a file's or directory's name says, as written: the one split word (SPLIT_NAMES) among the parts
    that - _ . separate (train.csv, test_2024.parquet, mnist_train.csv, ECG5000_TEST.tsv, val/, Train-00000-of-00001);
    else None (contest.csv, train_test.csv)."""
    said = {part for part in re.split(r"[-_.]", name) if part.lower() in WORDS}
    return said.pop() if len(said) == 1 else None


def of_files(root: str, files: list[str]) -> list[str] | None:
    """Each file's split where the files under data.path are named for their splits (train.csv and
    test.csv, mnist_train.csv and mnist_test.csv, or train/ and test/ directories; below a folder that says none,
    as a Hugging Face dataset's repository keeps them: data/train-00000-of-00001.parquet): the split word of
    the first name on its path that says one, as written; else None."""
    if len(files) < 2:
        return None
    found = [next(filter(None, map(split_word, posixpath.relpath(f, root).split("/"))), None) for f in files]
    return found if all(found) and len({word.lower() for word in found}) > 1 else None


_WORD = "|".join(name for names in SPLIT_NAMES for name in names)
SPLIT_ARRAY = re.compile(rf"(?:(?P<name>.+?)[-_.](?P<split>{_WORD})|(?P<split_first>{_WORD})[-_.](?P<name_last>.+))",
                         re.IGNORECASE)


def of_arrays(arrays: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], np.ndarray] | None:
    """Arrays named for their splits, as Keras' mnist.npz holds them and `np.savez(f, x_train=..., y_train=...,
    x_test=..., y_test=...)` writes them (or train_x, train_images, ...): the arrays of each name joined across
    the splits (x, y), and each row's split word; None where the names do not all say a split. A file of one split
    (x_test and y_test: inputs to predict) has the same names, x and y."""
    found = {key: SPLIT_ARRAY.fullmatch(key) for key in arrays}
    if not all(found.values()):
        return None
    parts = {key: (m["name"] or m["name_last"], m["split"] or m["split_first"]) for key, m in found.items()}
    by_split: dict[str, dict[str, str]] = {}
    for key, (name, split) in parts.items():
        by_split.setdefault(split.lower(), {})[name] = key
    first, names = next(iter(by_split.items()))
    for split, keys in by_split.items():
        if set(keys) != set(names):
            raise DataError(f"the NPZ's {split} arrays are {sorted(keys.values())}, its {first} arrays "
                            f"{sorted(names.values())}: every split needs arrays of the same names")
        if len({len(arrays[key]) for key in keys.values()}) > 1:
            rows = ", ".join(f"{key} {len(arrays[key]):,}" for key in keys.values())
            raise DataError(f"the NPZ's {split} arrays hold different numbers of rows ({rows}): one row of each "
                            "per sample")
    columns = {name: np.concatenate([arrays[keys[name]] for keys in by_split.values()]) for name in names}
    named = np.concatenate([[split] * len(arrays[keys[next(iter(names))]]) for split, keys in by_split.items()])
    return columns, named
