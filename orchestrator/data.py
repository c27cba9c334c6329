"""Datasets: digits (real), synthetic, user files, and text; split and normalized, in memory.

Every classification source becomes (features float32 [N, *shape], labels int64 [N], label
names), split train/val/test with the experiment seed (stratified), and normalization
statistics are computed on the training split only. Text becomes byte sequences for a
language model: x int64 [N, T] and y the same bytes shifted by one, split in order (the
test split is the end of the corpus, never interleaved with training text). The splits are
arrays, which trainers and trials get through Ray's object store; with train.streaming they
become Ray Datasets, which Ray Train streams to its workers.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from dataclasses import dataclass

import numpy as np

from orchestrator import blanks, byte_text, dates, folders, splits, storage
from orchestrator.amounts import as_numbers
from orchestrator.amounts import example as amount_example
from orchestrator.amounts import read_text as read_amounts
from orchestrator.categories import (MAX_CATEGORIES, categories_of, check_not_numbers, look_alike, names_rows,
                                     one_hot, sentence_words, texts)
from orchestrator.arrayfiles import columns_of, read_arrays
from orchestrator.config import DataConfig, DigitsData, FilesData, SyntheticData, TextData
from orchestrator.datafiles import (ARRAY_FORMATS, FOLDERS, LIKELY_LABELS, data_files, image_dir_named,
                                    in_folder_of, not_in_data, refer_images, walk)
from orchestrator.errors import DataError
from orchestrator.images import channels_last, decode_images, image_bytes, is_image_column
from orchestrator.tablefiles import blank_cells, holds_text, read_table


@dataclass
class Arrays:
    x: np.ndarray  # float32 [N, *input_shape] (text: int64 [N, T] bytes, as token ids)
    y: np.ndarray  # int64 [N], indices into label_names (text: [N, T], the next bytes)
    label_names: list[str]
    feature_columns: list[str] | None = None  # table columns, in the order they fill each sample
    categories: dict[str, list[str]] | None = None  # a text column's categories, a feature each (one-hot)
    dates: list[str] | None = None  # date columns, 7 features each (dates.py)
    # columns of text read as dates (other than ISO 8601) or numbers ($1,234.50): the form (dates.py, amounts.py)
    written_forms: dict[str, str] | None = None
    text_column: str | None = None  # a column of free text, x its bytes (byte_text.py): int64 [N, text_bytes]
    text_bytes: int | None = None  # the text beside a table's columns: x's first text_bytes features, as floats
    text_parts: list[str] | None = None  # the columns joined into that text, where there are several (byte_text.join)
    split: np.ndarray | None = None  # int8 per row where the data says its split: 0 train, 1 val, 2 test

    def features(self) -> list[tuple[str, str]]:
        """A table's features, as (column, name) (blanks.table_features)."""
        return blanks.features_of(vars(self))


@dataclass
class Splits:
    """What training, evaluation and serving need to know about the data."""

    arrays: dict[str, tuple[np.ndarray, np.ndarray]]  # (x, y) of train, val and test
    input_shape: list[int]
    input_dtype: str  # float32 features, or int64 bytes of text
    label_names: list[str]
    feature_columns: list[str] | None  # the table columns each sample is built from, in order
    categories: dict[str, list[str]] | None  # of its text columns
    dates: list[str] | None  # its date columns (dates.py)
    written_forms: dict[str, str] | None  # columns of text read as dates or numbers: the form (see Arrays)
    text_column: str | None  # the column of free text whose bytes are each sample (byte_text.py)
    text_bytes: int | None  # beside a table's columns: the text's bytes are each sample's first text_bytes features
    text_parts: list[str] | None  # the columns joined into the text, where there are several
    blanks: dict | None  # a table's features with blank cells, and what fills them (blanks.py)
    mean: np.ndarray  # broadcasts against one sample (of the filled features and their 0/1 blank flags)
    std: np.ndarray
    fingerprint: str  # sha256 of the features and labels before splitting

    @property
    def num_rows(self) -> dict[str, int]:
        return {split: len(y) for split, (_, y) in self.arrays.items()}

    def normalization(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    def dataset(self, split: str):
        """The split as a Ray Dataset with columns x and y. Needs a running Ray."""
        return to_ray_dataset(*self.arrays[split])

    def info(self) -> dict:
        """What a checkpoint records about its data: serving decodes requests with it."""
        labels = self.arrays["train"][1]
        return {
            "input_shape": self.input_shape,
            "input_dtype": self.input_dtype,
            "label_names": self.label_names,
            "feature_columns": self.feature_columns,
            "categories": self.categories,
            "dates": self.dates,
            "written_forms": self.written_forms,
            "text_column": self.text_column,
            "text_bytes": self.text_bytes,
            "text_parts": self.text_parts,
            "blanks": self.blanks,
            # rows of each class in the training split (train.class_weight); a language model's targets are bytes
            "class_counts": np.bincount(labels, minlength=len(self.label_names)).tolist() if labels.ndim == 1 else None,
            "normalization": self.normalization(),
            "data_fingerprint": self.fingerprint,
        }


def load_arrays(cfg: DataConfig, seed: int, endpoint_url: str | None = None,
                known: dict | None = None) -> Arrays:
    """`known`: a model's description of its data (model_info), to encode its text and date columns as
    training did (evaluate on other data)."""
    if isinstance(cfg, DigitsData):
        return _digits()
    if isinstance(cfg, SyntheticData):
        return _synthetic(cfg, seed)
    if isinstance(cfg, TextData):
        return _text(cfg, endpoint_url)
    return _files(cfg, endpoint_url, known)


def columns_read(arrays: Arrays, most: int = 24) -> str:
    """One line that says how each of a table's columns is read: a number (as written, where it is text), a
    category (how many), a date, the text; the first `most` of them."""
    def kind(column: str) -> str:
        form = (arrays.written_forms or {}).get(column)
        if column == arrays.text_column:
            return "text" + (f" of {len(arrays.text_parts)} columns" if arrays.text_parts else "")
        if column in (arrays.dates or []):
            return "date" + (f" written {dates.example(form)!r}" if form else "")
        if column in (arrays.categories or {}):
            return f"{len(arrays.categories[column])} categories"
        if len(arrays.feature_columns) == 1 and arrays.x.shape[1:] != (1,):  # a list or tensor per row, NPZ's x
            return f"array of shape {list(arrays.x.shape[1:])}"
        return "number" + (f" written {amount_example(form)!r}" if form else "")

    shown = [f"{column} {kind(column)}" for column in arrays.feature_columns[:most]]
    more = len(arrays.feature_columns) - most
    return (f"data: {len(arrays.y):,} rows, {len(arrays.label_names)} classes; columns read: {', '.join(shown)}"
            + (f", and {more} more" if more > 0 else ""))


def channel_stats(x: np.ndarray, rows_at_once: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Mean/std per channel: axis 0 of a [C, H, W] sample, else the last axis (features). Summed in float64 over
    `rows_at_once` rows at a time: numpy's std of all of x at once holds a float64 copy of it (320 MB for MNIST's
    training images)."""
    sample_ndim = x.ndim - 1
    keep = 1 if sample_ndim == 3 else x.ndim - 1
    axes = tuple(a for a in range(x.ndim) if a != keep)
    count = x.size // x.shape[keep]  # values per channel

    def total(of) -> np.ndarray:
        return sum(of(x[i:i + rows_at_once]).sum(axis=axes, keepdims=True, dtype=np.float64)
                   for i in range(0, len(x), rows_at_once))

    mean = total(lambda part: part) / count
    std = np.sqrt(total(lambda part: np.square(part - mean)) / count)
    std = np.where(std < 1e-8, 1.0, std)[0]  # a constant feature passes through unscaled
    return mean[0].astype(np.float32), std.astype(np.float32)


def fingerprint(arrays: Arrays) -> str:
    h = hashlib.sha256()
    for a in (arrays.x, arrays.y, *([] if arrays.split is None else [arrays.split])):  # a split the data gives
        h.update(str(a.shape).encode())
        h.update(np.ascontiguousarray(a).reshape(-1).view(np.uint8))  # its bytes, not a copy of them
    h.update("\n".join(arrays.label_names).encode())
    return h.hexdigest()


def to_ray_dataset(x: np.ndarray, y: np.ndarray):
    import pyarrow as pa
    import ray.data
    from ray.data.extensions import ArrowTensorArray

    column = lambda a: ArrowTensorArray.from_numpy(a) if a.ndim > 1 else a  # noqa: E731
    return ray.data.from_arrow(pa.table({"x": column(x), "y": column(y)}))


def load_splits(cfg: DataConfig, seed: int, endpoint_url: str | None = None) -> Splits:
    """The experiment's data, split."""
    arrays = load_arrays(cfg, seed, endpoint_url)
    fills = None
    text = isinstance(cfg, TextData)
    if text:  # in corpus order
        tr, va, te = splits.ordered_split(len(arrays.y), cfg.val_fraction, cfg.test_fraction)
    else:
        if len(arrays.label_names) < 2:
            raise DataError(f"the labels hold one class ({arrays.label_names[0]!r} in every row): a classifier "
                            "needs two or more; is data.label_column the right column?")
        tr, va, te = (splits.split_indices(arrays.y, cfg.val_fraction, cfg.test_fraction, seed) if arrays.split is None
                      else splits.given_split(arrays.split, arrays.y, cfg.val_fraction, cfg.test_fraction, seed))
        if arrays.feature_columns:
            print(columns_read(arrays), flush=True)
    parts = {split: (arrays.x[rows], arrays.y[rows]) for split, rows in (("train", tr), ("val", va), ("test", te))}
    if text or (arrays.text_column and not arrays.text_bytes):  # bytes are token ids: nothing to normalize
        mean, std = np.zeros(1, np.float32), np.ones(1, np.float32)
    else:  # over the train split (its rows copied once, above: MNIST's 51,000 images are 160 MB as float32)
        if arrays.feature_columns and np.isnan(arrays.x).any():  # only a table's blank cells get this far
            fills = blanks.find(arrays.x, tr, arrays.features())
            print(blanks.notice(fills, len(arrays.y)), flush=True)
        train_x = parts["train"][0]
        mean, std = channel_stats(blanks.fill_numpy(train_x, fills) if fills else train_x)
        if arrays.text_bytes:  # a text's bytes beside the table: token ids, left as they are
            mean[: arrays.text_bytes], std[: arrays.text_bytes] = 0, 1
    return Splits(
        arrays=parts,
        input_shape=list(arrays.x.shape[1:]),
        input_dtype=str(arrays.x.dtype),
        label_names=arrays.label_names,
        feature_columns=arrays.feature_columns,
        categories=arrays.categories,
        dates=arrays.dates,
        written_forms=arrays.written_forms,
        text_column=arrays.text_column,
        text_bytes=arrays.text_bytes,
        text_parts=arrays.text_parts,
        blanks=fills,
        mean=mean,
        std=std,
        fingerprint=fingerprint(arrays),
    )


# ---- sources ----------------------------------------------------------------------------


def _digits() -> Arrays:
    from sklearn.datasets import load_digits

    d = load_digits()  # ships with scikit-learn: no download
    x = d.images.astype(np.float32)[:, None, :, :]  # [N, 1, 8, 8], pixel values 0..16
    return Arrays(x, d.target.astype(np.int64), [str(c) for c in d.target_names])


def _synthetic(cfg: SyntheticData, seed: int) -> Arrays:
    rng = np.random.default_rng(seed)
    num_features = int(np.prod(cfg.feature_shape))
    centres = rng.normal(size=(cfg.num_classes, num_features))
    centres *= cfg.class_separation / np.sqrt(2 * num_features)  # expected centre distance = separation
    y = rng.integers(0, cfg.num_classes, size=cfg.num_samples)
    x = centres[y] + rng.normal(size=(cfg.num_samples, num_features))
    x = x.astype(np.float32).reshape(cfg.num_samples, *cfg.feature_shape)
    return Arrays(x, y.astype(np.int64), [str(c) for c in range(cfg.num_classes)])


def _files(cfg: FilesData, endpoint_url: str | None, known: dict | None) -> Arrays:
    fs, root, files, fmt = data_files(cfg.path, cfg.format, endpoint_url)
    if fmt in ARRAY_FORMATS:
        arrays = read_arrays(fs, files, fmt)
        if cfg.split_column or cfg.order_column:
            return _columns_to_arrays(arrays, cfg, known=known)
        columns, named = columns_of(arrays)  # every row, for a model's evaluation (known); one split names none
        source = ("its arrays' names (x_train, ...)" if fmt == "npz" else
                  "its files' names (train-images-idx3-ubyte, t10k-...)")
        return _columns_to_arrays(columns, cfg, known=known, split_names=named if known is None and named is not None
                                  and len(set(named)) > 1 else None, split_source=source)
    if fmt in FOLDERS and cfg.order_column:
        raise DataError(f"data.order_column names a column of a table, and folders of {fmt} have none: leave it out")
    if fmt == "images":
        images, labels, split = folders.read_images(fs, root, files, cfg)
        names, y = np.unique(np.array(labels), return_inverse=True)
        return Arrays(images, y.astype(np.int64), [str(n) for n in names], split=split)
    if fmt == "texts":
        columns, cfg, split_names, source = folders.read_texts(fs, root, files, cfg)
        return _columns_to_arrays(columns, cfg, known=known, split_names=split_names if known is None else None,
                                  split_source=source)
    by_file = None if known or cfg.split_column or cfg.order_column else splits.of_files(root, files)
    if by_file is None:
        columns, index = read_table(fs, root, files, fmt, cfg)
        return _columns_to_arrays(_with_images(columns, cfg, endpoint_url), cfg, index, known)
    columns, index, named = _tables_by_split(fs, root, files, by_file, fmt, cfg)
    return _columns_to_arrays(_with_images(columns, cfg, endpoint_url), cfg, index, known, named)


def _with_images(columns: dict[str, np.ndarray], cfg: FilesData, endpoint_url: str | None) -> dict[str, np.ndarray]:
    """The table's columns, the one naming data.image_dir's files holding them (datafiles.refer_images)."""
    if not cfg.image_dir:
        return columns
    return refer_images(columns, in_folder_of(cfg.path, cfg.image_dir), endpoint_url, skip=(cfg.label_column,))


def _tables_by_split(fs, root: str, files: list[str], by_file: list[str], fmt: str, cfg: FilesData):
    """The columns and index (as read_table) of files named for their splits (train.csv and test.csv, or
    train/ and test/ directories of parts), and each row's split, as its file names it."""
    groups = {split: [f for f, s in zip(files, by_file, strict=True) if s == split] for split in dict.fromkeys(by_file)}
    read = {split: read_table(fs, root, group, fmt, cfg) for split, group in groups.items()}
    names = {split: list(columns) for split, (columns, _) in read.items()}

    def shown(split: str) -> str:
        return ", ".join(storage.uri(fs, f) for f in groups[split][:2]) + (" ..." if len(groups[split]) > 2 else "")

    for split, why in [(s, why) for s in groups if (why := _unlabelled(cfg.label_column, s, read))]:
        if split.lower() in splits.SPLIT_NAMES[0]:
            raise DataError(f"{shown(split)}, the train split, {why}: name the column to predict in "
                            "data.label_column")
        print(f"data: {shown(split)} not read: it {why}, so its rows are to predict (`orchestrator predict "
              "CHECKPOINT --input FILE`), not to test on", flush=True)
        del groups[split], read[split], names[split]
    first = next(iter(groups))
    train = next((s for s in groups if s.lower() in splits.SPLIT_NAMES[0]), first)
    for split in groups:
        lacked = [c for c in names[train] if c not in names[split]]
        if lacked and not any(cfg.label_column in n for n in names.values()):  # Kaggle's folder, no label named
            raise not_in_data(f"label column {cfg.label_column!r}", [cfg.label_column], names[train],
                              f"name the column to predict in data.label_column ({_lacking(shown(split), lacked)}?)")
        if set(names[split]) != set(names[first]):
            raise DataError(f"the {split} split's files ({shown(split)}) have columns {names[split]}, the {first} "
                            f"split's {names[first]}: every split needs the same columns")
    columns = {c: np.concatenate([read[split][0][c] for split in groups]) for c in names[first]}
    index = set().union(*(found for _, found in read.values()))
    named = np.concatenate([[split] * len(read[split][0][names[first][0]]) for split in groups])
    return columns, index, named


def _unlabelled(label: str, split: str, read: dict) -> str | None:
    """Why the files of `split` hold no labels, where another split's do: they lack the label column (Kaggle's
    test.csv beside train.csv), or mark every row -1, as Hugging Face's datasets mark a row without a label (GLUE's
    test splits), where the other splits never do. None: labelled."""
    others = [columns[label] for s, (columns, _) in read.items() if s != split and label in columns]
    if not others:
        return None
    columns = read[split][0]
    if label not in columns:
        return f"has no {label!r} column, the label"
    values = columns[label]
    if (values.dtype.kind in "iu" and len(values) and (values == -1).all()
            and not any(o.dtype.kind in "iu" and (o == -1).any() for o in others)):
        return f"marks every row's {label!r} -1, as Hugging Face's datasets mark a row without a label"
    return None


BYTE_NAMES = [chr(b) if 32 < b < 127 else f"0x{b:02x}" for b in range(256)]  # label names of the 256 tokens


def _text(cfg: TextData, endpoint_url: str | None) -> Arrays:
    """Byte sequences of cfg.block_size, each with the next bytes as its targets."""
    corpus = read_corpus(cfg, endpoint_url)
    t = cfg.block_size
    n = (len(corpus) - 1) // t
    if n < 3:
        raise DataError(f"the corpus holds {len(corpus)} bytes, too few for 3 sequences of data.block_size {t}")
    stream = np.frombuffer(corpus, dtype=np.uint8).astype(np.int64)
    return Arrays(stream[: n * t].reshape(n, t), stream[1 : n * t + 1].reshape(n, t), list(BYTE_NAMES))


def read_corpus(cfg: TextData, endpoint_url: str | None = None) -> bytes:
    """Up to cfg.max_bytes of the corpus: its files in name order, concatenated."""
    if cfg.path is None:
        import sysconfig

        path, suffixes = sysconfig.get_paths()["stdlib"], cfg.suffixes or [".py"]
    else:
        path, suffixes = cfg.path, cfg.suffixes
    fs, root = storage.filesystem(path, endpoint_url, web=True)
    skip = ("site-packages", "dist-packages") if cfg.path is None else ()  # the stdlib, not what is installed in it
    out = bytearray()
    for f in walk(fs, root, path, skip):
        if suffixes and not f.endswith(tuple(suffixes)):
            continue
        with fs.open_input_stream(f) as fh:
            out += fh.read(cfg.max_bytes - len(out))
        if len(out) >= cfg.max_bytes:
            break
    if not out:
        raise DataError(f"no text{f' in files ending in {suffixes}' if suffixes else ''} under {path!r}: "
                        "set data.path or data.suffixes")
    return bytes(out)


def _columns_to_arrays(columns: dict[str, np.ndarray], cfg: FilesData, index: set[str] = frozenset(),
                       known: dict | None = None, split_names: np.ndarray | None = None,
                       split_source: str = "its file (train.csv, test.csv, ...)") -> Arrays:
    """`index`: columns that are features only where data.feature_columns names them. Text columns are
    categories (categories.py): those a model lists (`known`: its model_info), else every value in the data;
    date columns are 7 features each (dates.py). `split_names`: each row's split, as `split_source` names it."""
    available = list(columns)  # in the file's order, which is the order of each sample's features
    if cfg.label_column not in columns:
        likely = [repr(c) for c in available if c.strip().lower() in LIKELY_LABELS]
        if known is None and (lacked := _lacked_by_test_file(cfg, available)):
            likely.append(_lacking(*lacked))
        if not likely and available == [f"column{i + 1}" for i in range(len(available))]:  # named for no header
            likely.append(f"{available[-1]!r}, the last: a file without a header row (UCI's) has the class there")
        elif not likely and len(available) > 1 and (kinds := _few_values(columns[available[-1]])):
            likely.append(f"{available[-1]!r}, the last column, of {kinds} values")  # iris.csv's species
        raise not_in_data(f"label column {cfg.label_column!r}", [cfg.label_column], available,
                          "name the column to predict in data.label_column"
                          + (f" ({', '.join(likely)}?)" if likely else ""))
    rows = _labelled_rows(columns[cfg.label_column], cfg.label_column)
    if len(rows) < len(columns[cfg.label_column]):
        columns = {name: values[rows] for name, values in columns.items()}
    read = [c for c in columns if c != cfg.label_column and c in (cfg.feature_columns or columns)]  # not decoded:
    for name in [c for c in read if is_image_column(columns[c])]:  # images of a column data.feature_columns leaves out
        columns = {**columns, name: _image_column(columns[name], name, cfg, rows)}  # [N, C, H, W] from here on
    parts = cfg.text_columns if len(cfg.text_columns) > 1 else None
    if parts:  # a title and a body: one text, a column of its own from here on
        columns = {**columns, cfg.text_name: _joined_text(columns, cfg)}
    beside = bool(cfg.text_column and cfg.feature_columns)  # a text beside a table's columns
    if cfg.text_column is not None and not beside:
        x, feature_cols, found, dated, forms = _text_input(columns, cfg), [cfg.text_name], {}, [], {}
        read = (cfg.text_name, *cfg.text_columns, cfg.label_column, cfg.split_column, *index)
        if known is None and (others := [c for c in columns if c not in read]):
            print(f"data: the text is the whole input, and columns {others} are not read: to read some beside it, "
                  "name them in data.feature_columns", flush=True)
    else:
        x, feature_cols, found, dated, forms = _features(columns, cfg, index, known, rows)
    y, label_names = _labels(columns[cfg.label_column], cfg.label_column)
    if known is None:  # training: the label's values are the classes to learn
        _check_classes(y, label_names, cfg.label_column, numeric=columns[cfg.label_column].dtype.kind in "iuf")
    split = (splits.named(split_names[rows], split_source) if split_names is not None
             else None if known else splits.of_rows(columns, cfg, rows))
    return Arrays(x, y, label_names, feature_cols, found or None, dated or None, forms or None, cfg.text_name,
                  cfg.text_bytes if beside else None, parts, split)


def _lacking(test: str, labels: list[str]) -> str:
    """The label(s) that a test file lacking `labels` suggests: Kaggle's test.csv lacks the label, or the labels."""
    return (f"{labels[0]!r}, the one column {test} lacks" if len(labels) == 1 else
            f"one of {labels}, the columns {test} lacks: a model predicts one label, so train one model for each")


def _few_values(values: np.ndarray, most: int = 50) -> int | None:
    """How many values a column holds where they are few, as classes are (at most `most`, and each twice on
    average); None for a column of ids, amounts or free text."""
    kinds = len(set(values.tolist()))
    return kinds if 1 < kinds <= min(most, len(values) // 2) else None


def _lacked_by_test_file(cfg: FilesData, columns: list[str]) -> tuple[str, list[str]] | None:
    """(the test file's name, the columns of the training file it lacks): Kaggle's test.csv beside train.csv holds
    every column but the label (or the labels: Jigsaw's toxic, severe_toxic, ...). None where data.path is no local
    file named for the train split, or has no such test file beside it, or it lacks none or most."""
    word = splits.split_word(os.path.basename(cfg.path))
    if "://" in cfg.path or not os.path.isfile(cfg.path) or word is None or word.lower() not in ("train", "training"):
        return None
    test_word = {"TRAIN": "TEST", "Train": "Test"}.get(word, "test")  # ECG5000_TRAIN.tsv: ECG5000_TEST.tsv
    name = re.sub(rf"(?<![^-_.]){re.escape(word)}(?![^-_.])", test_word, os.path.basename(cfg.path))
    test = os.path.join(os.path.dirname(cfg.path), name)
    if not os.path.isfile(test):
        return None
    try:
        fs, root, files, fmt = data_files(test, cfg.format, None, say=False)
        found = read_table(fs, root, files, fmt, cfg)[0]
    except DataError:
        return None
    lacked = [c for c in columns if c not in found]
    return (name, lacked) if 1 <= len(lacked) <= 20 else None


def _image_column(values: np.ndarray, column: str, cfg: FilesData, rows: np.ndarray) -> np.ndarray:
    """A column of image files (Hugging Face datasets' Parquet: images.image_bytes) decoded as an image folder's
    files are, to data.feature_shape or the first image's shape."""
    def file(row: int, cell) -> bytes:
        if (raw := image_bytes(cell)) is None:
            raise DataError(f"row {row + 1} of column {column!r} holds no image file ({str(cell)[:40]!r}), where "
                            "the column's other rows do: fill it in or leave the row out")
        return raw

    return decode_images([(functools.partial(file, row, cell), f"the image in row {row + 1} of column {column!r}")
                          for row, cell in zip(rows, values, strict=True)], cfg.feature_shape)[0]


def counts_rows(values: np.ndarray) -> bool:
    """Whether a column is whole numbers that count the rows: each one more than the last (1, 2, 3 or 1001,
    1002, ...), as ids and row numbers do, or back at the first at a file's start (Hugging Face's `idx` counts
    each split's rows from 0)."""
    if values.dtype.kind not in "iu" or values.ndim != 1 or len(values) < 20:  # an array per row (an image): no id
        return False
    values = values.astype(np.int64)
    step, restart = np.diff(values) == 1, values[1:] == values[0]
    restarts = int((restart & ~step).sum())  # a file's each, not a cycle's (stars 1 to 5, again and again)
    return bool((step | restart).all()) and restarts <= 8 and len(values) >= 20 * (restarts + 1)


def _text_of(columns: dict[str, np.ndarray], name: str) -> np.ndarray:
    """A column of text's cells; a blank cell is the empty text."""
    if name not in columns:
        raise not_in_data(f"data.text_column {name!r}", [name], list(columns), "name a column of text")
    if not holds_text(columns[name]):
        raise DataError(f"data.text_column {name!r} holds {columns[name].dtype.name} values, not text: name a "
                        "column of text, or leave data.text_column unset to use the column as numbers")
    return texts(columns[name])


def _joined_text(columns: dict[str, np.ndarray], cfg: FilesData) -> np.ndarray:
    """data.text_column's columns as one text per row, in the order listed (byte_text.join)."""
    if cfg.text_name in columns:
        raise DataError(f"the data has a column named {cfg.text_name!r}, the name the text of data.text_column's "
                        f"columns {cfg.text_columns} goes by: rename that column")
    parts = [_text_of(columns, name) for name in cfg.text_columns]
    return np.array([byte_text.join(row) for row in zip(*parts, strict=True)], dtype=str)


def _text_input(columns: dict[str, np.ndarray], cfg: FilesData) -> np.ndarray:
    """The text column's bytes (byte_text.py); a blank cell is the empty text."""
    name = cfg.text_name
    values = _text_of(columns, name)
    lengths = np.array([len(text.encode(errors="replace")) for text in values])
    if cut := int((lengths > cfg.text_bytes).sum()):  # said, not refused: a text's start may well tell its class
        print(f"data.text_column {name!r}: {cut:,} of {len(values):,} texts are longer than data.text_bytes "
              f"{cfg.text_bytes} (the longest {lengths.max():,} bytes), and the model reads the first "
              f"{cfg.text_bytes} bytes of each: raise data.text_bytes to read more", flush=True)
    return byte_text.encode(values, cfg.text_bytes)


def _labelled_rows(labels: np.ndarray, column: str) -> np.ndarray:
    """The rows that have a label. A row without one is left out, and said: nothing can be learned from it
    or scored on it (AutoGluon and Ludwig leave such rows out too)."""
    blank = blank_cells(labels)
    if blank.all():
        raise DataError(f"label column {column!r} is empty in every row: is data.label_column the right column?")
    if unlabelled := int(blank.sum()):
        print(f"data: {unlabelled:,} of {len(labels):,} rows have no {column!r} (the first is row "
              f"{np.argmax(blank) + 1} of the data): left out, as a row without its label can neither teach the "
              "model nor score it", flush=True)
    return np.flatnonzero(~blank)


def _features(columns: dict[str, np.ndarray], cfg: FilesData, index: set[str], known: dict | None,
              rows: np.ndarray) -> tuple[np.ndarray, list[str], dict[str, list[str]], list[str], dict[str, str]]:
    """float32 features [N, ...] from numeric, list, text (category) and date columns, and data.text_column's
    bytes first where it is beside them; the columns, the categories of the text ones, which are dates and the
    form of the columns of text read as dates or numbers (dates.read_text, amounts.read_text).
    `known`: a model's model_info (else training). `rows`: the data's row of each sample, for messages that
    name one."""
    available = list(columns)
    feature_cols = cfg.feature_columns or [c for c in available
                                           if c not in (cfg.label_column, cfg.split_column) and c not in index]
    images = [c for c in feature_cols if c in columns and np.ndim(columns[c]) == 4]  # [N, C, H, W]: _image_column's
    if cfg.feature_columns is None and images and len(feature_cols) > 1:  # an image is a model's whole input
        if known is None:
            print(f"data: column {images[0]!r} holds images, the input; columns "
                  f"{[c for c in feature_cols if c != images[0]]} are not read", flush=True)
        feature_cols = images[:1]
    free_text = cfg.text_name  # set here only beside data.feature_columns
    feature_cols = [free_text, *feature_cols] if free_text else feature_cols
    if not feature_cols:
        raise DataError(f"the data has no feature columns: its columns are {available}, the label and any index "
                        "pandas wrote (see data.feature_columns)")
    if missing := [c for c in feature_cols if c not in columns]:
        raise not_in_data(f"feature columns {missing}", missing, available, "name the data's columns in "
                          "data.feature_columns")
    if known is None:  # training: the columns of dates; the text columns, and every value they hold
        text = {c: texts(columns[c]) for c in feature_cols if c != free_text and holds_text(columns[c])}
        dates_of = {c: columns[c].astype("datetime64[s]") for c in feature_cols if columns[c].dtype.kind == "M"}
        read = {c: r for c, values in text.items() if (r := dates.read_text(values)) is not None}
        dates_of |= {c: values for c, (values, _, _) in read.items()}
        forms = {c: form for c, (_, form, _) in read.items() if form}
        for c, (_, form, others) in read.items():
            if others:  # 3/4/2026: March 4 or 3 April; read as the first form, and said
                print(f"data: column {c!r}: every date in it fits two forms, {dates.example(form)!r} and "
                      f"{dates.example(others[0])!r} for 5 January 2026: read as the first. If they are written as "
                      "the second, write them as ISO 8601 (2026-01-05)", flush=True)
        # $1,234.50, 12.5%: numbers from here on (amounts.py)
        numbers = {c: r for c, values in text.items() if c not in dates_of and (r := read_amounts(values))}
        columns = {**columns, **{c: values for c, (values, _) in numbers.items()}}
        forms |= {c: form for c, (_, form) in numbers.items()}
        text = {c: values for c, values in text.items() if c not in dates_of and c not in numbers}
        found = {c: categories_of(values) for c, values in text.items()}
        if cfg.feature_columns is None and (ids := [c for c in feature_cols if counts_rows(columns[c])]):
            print(f"data: columns {ids} hold a different whole number in every row, counting up as rows do: ids, "
                  "most likely, which a model would learn the rows' order from. Read as numbers; to leave them "
                  "out, list the other columns in data.feature_columns", flush=True)
    else:  # the model's text columns, its values; its date columns, read as dates whatever the reader made them
        forms = {c: f for c, f in (known.get("written_forms") or {}).items() if c in feature_cols}
        dates_of = {c: dates.as_dates(columns[c], c, forms.get(c)) for c in feature_cols
                    if c in (known.get("dates") or [])}
        columns = {**columns, **{c: as_numbers(columns[c], c, form) for c, form in forms.items() if c not in dates_of}}
        found = known.get("categories") or {}
        text = {c: texts(columns[c]) for c in feature_cols if c in found}
        if numeric := [c for c in feature_cols if c not in (*text, *dates_of, free_text) and holds_text(columns[c])]:
            raise DataError(f"feature columns {numeric} hold text, where the model was trained on numbers")
    dated = [c for c in feature_cols if c in dates_of]
    num_rows = len(columns[cfg.label_column])
    if known is None:  # training: every text column must be categories
        for c, values in text.items():
            check_not_numbers(c, values)
        if wide := [c for c in text if names_rows(found[c], num_rows)]:
            if folder := next(filter(None, (image_dir_named(cfg.path, columns[c]) for c in wide)), None):
                raise DataError(f"a column of {cfg.path} names the image files in {folder}/: set data.image_dir: "
                                f"{folder} to read them as the input (with model.name cnn)")
            counts = ", ".join(f"{c!r} {len(found[c])}" for c in wide)
            kept = [c for c in feature_cols if c not in wide]
            keep = ", ".join(kept)
            beside = f", and data.feature_columns: [{keep}] for the columns beside it" if keep else ""
            what = (f"too many different values to be categories ({counts} in {num_rows} rows; at most "
                    f"{MAX_CATEGORIES}, and under half the rows): ids, names or free text")
            as_text = (f"to read one as free text, set data.text_column: {wide[0]} with model.name rnn or "
                       f"transformer{beside}")
            if not kept:  # nothing else to read: the text is the input
                raise DataError(f"text columns hold {what}, and the data has no other feature column: "
                                f"{as_text}")
            if cfg.feature_columns:  # asked for by name
                raise DataError(f"text columns hold {what}. Leave them out: data.feature_columns: [{keep}]; or, "
                                f"{as_text}")
            # every column was taken by default: those that name rows are left out, as ids would be by hand
            print(f"data: columns {wide} hold {what}: left out ({as_text})", flush=True)
            feature_cols, text = kept, {c: v for c, v in text.items() if c not in wide}
            found = {c: v for c, v in found.items() if c not in wide}
        for c in text:
            if alike := look_alike(found[c]):
                print(f"data: column {c!r} holds values that differ only in case or spaces, {_alike(alike)}: "
                      "different categories here; if each group is one value, write it alike", flush=True)
            if (words := sentence_words(found[c])) is not None:
                print(f"data: column {c!r} holds sentences (a median of {words} words), made categories: each "
                      "different text a feature of its own, and one that training never saw turns on none. To "
                      f"read their words, set data.text_column: {c} (model.name rnn or transformer; the columns "
                      "beside it in data.feature_columns)", flush=True)
    lists = [c for c in feature_cols if c not in text and (columns[c].ndim > 1 or columns[c].dtype == object  # a
             and any(isinstance(v, (list, tuple, np.ndarray)) for v in columns[c]))]  # list (tensor, image) per row
    if lists and len(feature_cols) > 1:
        raise DataError(f"feature columns {lists} hold lists or images, beside other feature columns: such a column "
                        "is a whole input, so name it alone in data.feature_columns, or give each of its values a "
                        "column")
    try:
        if len(feature_cols) == 1 and not text and not dated:  # one tensor/list column, or a single scalar feature
            whole = columns[lists[0]] if lists else None  # an array [N, ...] (NPZ, IDX), or a list per row
            x = (whole if whole.ndim > 1 else np.stack(whole)) if lists else _numbers(columns[feature_cols[0]])
        else:  # a feature per number, per category of a text column, and 7 per date column
            x = np.concatenate([_text_input(columns, cfg) if c == free_text else one_hot(text[c], found[c])
                                if c in text else dates.features(dates_of[c]) if c in dates_of
                                else _numbers(columns[c]).reshape(num_rows, -1) for c in feature_cols], axis=1)
        x = x.reshape(len(x), -1) if x.ndim == 1 else x
        x = x.astype(np.float32)
    except (TypeError, ValueError) as e:
        if lists and len(sizes := sorted({np.size(v) for v in columns[lists[0]]})) > 1:
            listed = ", ".join(map(str, sizes[:5])) + (", ..." if len(sizes) > 5 else "")
            raise DataError(f"feature column {lists[0]!r} holds lists of different sizes ({listed}): every input "
                            "must have the same size") from None
        raise DataError(f"features {feature_cols} are not numeric arrays of one shape: {e}") from None
    # a table's blank numeric cells stay NaN for the model to fill (blanks.py); anything else not finite is refused
    features = blanks.table_features(feature_cols, found, dated, (free_text, cfg.text_bytes) if free_text else None)
    table = x.ndim == 2 and len(features) == x.shape[1] and len(cfg.feature_shape or [1]) == 1
    infinite, blank = np.isinf(x).any(), np.isnan(x).any()
    if infinite or (blank and not (table and cfg.fill_blanks)):
        raise DataError(_not_finite(x, rows, [c for c, _ in features] if table else [], table and not infinite))
    if blank and known is None and (empty := list(dict.fromkeys(features[i][0]
                                                                for i in np.flatnonzero(np.isnan(x).all(0))))):
        raise DataError(f"columns {empty} are blank in every row: leave them out with data.feature_columns")
    if stored := channels_last(x.shape[1:]):  # as PIL, Keras, TensorFlow and Ray Data hold images
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        if known is None:
            print(f"data: images of shape {stored} (height, width, channels: channels last) read as "
                  f"{list(x.shape[1:])}, channels first, as PyTorch's layers take them", flush=True)
    if cfg.feature_shape and list(cfg.feature_shape) not in (stored, list(x.shape[1:])):  # either names the samples
        if int(np.prod(cfg.feature_shape)) != int(np.prod(x.shape[1:])):
            raise DataError(f"data.feature_shape {cfg.feature_shape} does not fit samples of shape {list(x.shape[1:])}")
        x = x.reshape(len(x), *cfg.feature_shape)
    return x, feature_cols, {c: found[c] for c in text}, dated, forms


def _labels(raw: np.ndarray, column: str) -> tuple[np.ndarray, list[str]]:
    """int64 class indices and the class names, sorted, of labels none of which is blank."""
    if raw.dtype.kind == "f":  # a CSV reader's floats for integer classes: 1.0 is class '1'
        if not np.array_equal(raw, np.round(raw)):
            example = raw[raw != np.round(raw)][0]
            raise DataError(f"label column {column!r} holds fractional numbers ({example:g}): models here "
                            "classify; give each row a class (a name or an integer)")
        raw = raw.astype(np.int64)
    names, y = np.unique(raw, return_inverse=True)
    return y.astype(np.int64), [str(n) for n in names]


def _check_classes(y: np.ndarray, names: list[str], column: str, numeric: bool) -> None:
    """Refuses a label whose values are mostly each in one row (a price, an id: a class of one row cannot be both
    learned and tested), and notes a label of many whole numbers, each a class, where near misses count as wrong."""
    if alike := look_alike(names):
        print(f"data: label column {column!r} holds values that differ only in case or spaces, {_alike(alike)}: "
              "different classes here; if each group is one class, write it alike", flush=True)
    counts = np.bincount(y, minlength=len(names))
    single = int((counts == 1).sum())
    amount = (f"the models here classify, and do not predict amounts (regression): to predict {column!r}, give each "
              "row a class, bands of it say (pandas.cut or qcut)")
    if len(names) >= 10 and single > len(names) / 2:
        raise DataError(f"label column {column!r} holds {len(names):,} different values in {len(y):,} rows, {single:,} "
                        f"of them in one row only: each value is a class, and a class of one row cannot be both learned "
                        f"and tested. " + (amount[0].upper() + amount[1:] if numeric else
                                           "Is it the column to predict? Name it in data.label_column"))
    codes = names in ([str(i) for i in range(len(names))], [str(i) for i in range(1, len(names) + 1)])
    if numeric and len(names) > 20 and not codes:  # 0 .. K-1 (CIFAR-100's fine labels) name classes; 18 .. 89 count
        print(f"data: label column {column!r} holds {len(names)} different numbers, each a class: a prediction of "
              f"{names[0]} for {names[1]} counts as wrong as any other; {amount}", flush=True)


def _alike(groups: list[list[str]], most: int = 3) -> str:
    shown = "; ".join(", ".join(map(repr, group)) for group in groups[:most])
    return shown + (f" (and {len(groups) - most} groups more)" if len(groups) > most else "")


def _numbers(values: np.ndarray) -> np.ndarray:
    """A column of numbers; a blank cell (null, which pyarrow gives as None) is NaN, for the check that
    names blank cells. A duration is its number of days."""
    if values.dtype.kind == "m":
        return np.where(np.isnat(values), np.nan, values.astype("timedelta64[s]").astype(np.float64) / 86_400)
    return np.array([np.nan if v is None else v for v in values], np.float64) if values.dtype == object else values


def _not_finite(x: np.ndarray, rows: np.ndarray, columns: list[str], fillable: bool) -> str:
    """Which rows (the data's: `rows`, each sample's) and columns (for a table: `columns`, each feature's) hold
    NaN or infinity, e.g. the blank cells of a CSV. `fillable`: blank cells that data.fill_blanks would fill."""
    bad = ~np.isfinite(x.reshape(len(x), -1))
    rows = rows[bad.any(axis=1)]
    where = ""
    if columns:
        where = " in columns " + str(list(dict.fromkeys(c for c, b in zip(columns, bad.any(axis=0), strict=True) if b)))
    return (f"features hold NaN or infinity (a blank cell, say){where}, in {len(rows)} of {len(x)} rows (the first "
            f"is row {rows[0] + 1} of the data): fill them in or leave those rows out"
            + (", or set data.fill_blanks: true" if fillable else ""))


# ---- worker-side helpers (plain torch) --------------------------------------------------


def augment(x, max_shift_px: int, noise_std: float, std, generator, flip: bool = False):
    """Random shift (zero padded) of [B, C, H, W] images, a left-right mirror of half of them with `flip`, and
    Gaussian noise scaled by the feature std."""
    import torch

    if flip and x.ndim == 4:
        mirrored = torch.rand(len(x), generator=generator) < 0.5
        x = torch.where(mirrored[:, None, None, None], x.flip(3), x)
    if max_shift_px and x.ndim == 4:
        b, _, h, w = x.shape
        p = max_shift_px
        padded = torch.nn.functional.pad(x, (p, p, p, p))
        dy = torch.randint(0, 2 * p + 1, (b,), generator=generator)
        dx = torch.randint(0, 2 * p + 1, (b,), generator=generator)
        rows = (dy[:, None] + torch.arange(h)[None, :])[:, None, :, None].expand(b, x.shape[1], h, w + 2 * p)
        x = padded.gather(2, rows)
        cols = (dx[:, None] + torch.arange(w)[None, :])[:, None, None, :].expand(b, x.shape[1], h, w)
        x = x.gather(3, cols)
    if noise_std:
        x = x + noise_std * torch.as_tensor(std) * torch.randn(x.shape, generator=generator)
    return x
