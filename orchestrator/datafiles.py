"""Data files: which files under data.path are the data and in what format (tables, arrays, images, texts), and
the files of new rows read (`orchestrator predict --input`) and written (scored rows), local, on S3 and GCS, or at
an https:// URL. A table's files are read in tablefiles.py, arrays' in arrayfiles.py.
"""

from __future__ import annotations

import base64
import difflib
import os
import posixpath
import re

import numpy as np

from orchestrator import storage
from orchestrator.categories import texts
from orchestrator.config import FilesData
from orchestrator.errors import DataError
from orchestrator.images import IMAGE_SUFFIXES, ImageFile, image_bytes, image_shape, is_image_column, is_image_file
from orchestrator.tablefiles import blank_cells, holds_text, is_blank, read_table


def read_rows(path: str, how: FilesData | None = None) -> list[dict]:
    """The rows of a table file (or a directory of them), read as `data.name: files` reads it (`how`: its encoding,
    sheet, header, ...), as objects keyed by column name: inputs to a model trained on a table (`orchestrator
    predict --input rows.csv`). An index pandas wrote is left out: it is never a model's column. An NPZ file's
    arrays are its columns (those named for their splits, x_train and x_test, joined), a row of each per input."""
    fs, root, files, fmt = data_files(path, how.format if how else None, None)
    if fmt in ARRAY_FORMATS:
        from orchestrator.arrayfiles import columns_of, read_arrays

        columns, _ = columns_of(read_arrays(fs, files, fmt))
        if len({len(values) for values in columns.values()}) > 1:
            lengths = ", ".join(f"{name} {len(values):,}" for name, values in columns.items())
            raise DataError(f"{path} holds arrays of different lengths ({lengths}): one row of each per input")
        cells = {name: values.tolist() for name, values in columns.items()}
        return [dict(zip(cells, row, strict=True)) for row in zip(*cells.values(), strict=True)]
    how = how or FilesData(name="files", path=path)
    columns, index = read_table(fs, root, files, fmt, how)
    columns = {k: v for k, v in columns.items() if k not in index}
    if how.image_dir:
        columns = refer_images(columns, in_folder_of(path, how.image_dir), skip=(how.label_column,))
    cells = {}
    for name, values in columns.items():
        if is_image_column(values):  # image files (Hugging Face's Parquet), as a request carries them: base64
            cells[name] = [{"b64": base64.b64encode(raw).decode()} if (raw := image_bytes(v)) else None
                           for v in values]
            continue
        if holds_text(values):  # a blank cell of a text column is the category "", as training reads it
            cells[name] = texts(values).tolist()
            continue
        blank = blank_cells(values)  # null, for the model to fill, or to refuse by name if it cannot
        values = values.astype(str) if values.dtype.kind in "mM" else values
        cells[name] = [None if b else _json_value(v) for v, b in zip(values.tolist(), blank, strict=True)]
    return [dict(zip(cells, row, strict=True)) for row in zip(*cells.values(), strict=True)]


# How read_rows gives a date or time cell to the model, as text: 2026-01-05, 2020-09-24T00:00:00.000000
ROW_DATE = re.compile(r"\d{4}-\d{2}-\d{2}(?:T\d{2}:\d{2}:\d{2}(?:\.\d+)?)?")


def _json_value(v):
    """A cell as JSON holds it: numbers, text and lists (a list column's arrays) as they are; dates, decimals
    and bytes as text, for the model's checks to name (no model trains on them)."""
    if isinstance(v, np.ndarray):
        return v.tolist()
    return v if isinstance(v, (int, float, str, list)) else str(v)


def write_rows(path: str, rows: list[dict]) -> None:
    """Rows (objects keyed by column name) to a table file, local or on S3/GCS, in the format its name says:
    CSV, TSV, JSON Lines or JSON (compressed as `.csv.gz` and the like say), Parquet, Feather, an Excel
    workbook (.xlsx). `check_writable` first."""
    import tempfile

    import pandas as pd

    frame, fmt = pd.DataFrame(rows), check_writable(path)
    for column in frame.columns:  # dates that read_rows gave the model as text: dates again in the table written
        filled = frame[column].dropna()
        if len(filled) and all(isinstance(v, str) and ROW_DATE.fullmatch(v) for v in filled):
            frame[column] = pd.to_datetime(frame[column], format="ISO8601")
    with tempfile.TemporaryDirectory() as tmp:
        # pandas writes local files (compressing by the name's suffix); a remote one is that file copied there
        local = path if not storage.is_remote(path) else os.path.join(tmp, posixpath.basename(path))
        if fmt == "parquet":
            frame.to_parquet(local, index=False)
        elif fmt == "feather":
            frame.to_feather(local)
        elif fmt in ("jsonl", "json"):
            frame.to_json(local, orient="records", lines=fmt == "jsonl", force_ascii=False)
        elif fmt == "excel":
            frame.to_excel(local, index=False, engine="openpyxl")
        else:
            frame.to_csv(local, index=False, sep="\t" if fmt == "tsv" else ",")
        if local != path:
            with open(local, "rb") as f:
                storage.write_bytes(path, f.read())


def check_writable(path: str) -> str:
    """The table format `write_rows` writes `path` in; DataError if it is none, or the path cannot be written
    (on S3 or GCS: a probe file written and deleted beside it)."""
    fmt = said_format(path)
    if fmt in (None, *ARRAY_FORMATS, *FOLDERS):
        raise DataError(f"{path}: name the file by the table format to write: .csv, .tsv, .jsonl, .json, .parquet, "
                        ".feather or .xlsx (.csv.gz and the like: compressed)")
    if storage.is_remote(path):
        storage.check_writable(posixpath.dirname(path.rstrip("/")))
    elif "://" in path:
        raise DataError(f"{path}: write to a local path, s3://bucket/key or gs://bucket/key")
    elif not os.path.isdir(os.path.dirname(os.path.abspath(path))):
        raise DataError(f"{path}: no such directory: {os.path.dirname(os.path.abspath(path))}")
    return fmt


def is_table_file(path: str) -> bool:
    """Whether the name says a table that `read_rows` reads (.csv, .parquet, .jsonl.gz, an NPZ of arrays, ...), or
    refuses (a spreadsheet)."""
    if posixpath.splitext(path.lower())[1] in SPREADSHEETS:
        return True
    return said_format(path) not in (None, *FOLDERS)


def data_files(path: str, fmt: str | None, endpoint_url: str | None, say: bool = True):
    """(filesystem, root, the data's files, their format) of a file or directory. With `fmt` (data.format) every
    file is read so; else the format is the one most files' names say (the first in SUFFIXES' order where as many
    say another), and files whose names say another or none (a README, the dataset_info.json beside Hugging Face's
    save_to_disk files) are left out, and said (`say`)."""
    fs, root = storage.filesystem(path, endpoint_url, web=True)
    files = list(walk(fs, root, path, skip=DESCRIPTIONS))
    if not files:
        raise DataError(f"data directory {path!r} holds no files")
    if len(files) > 1 and (forms := [f for f in files if SUBMISSION.fullmatch(posixpath.basename(f))]):
        if say:
            print(f"data: {', '.join(posixpath.relpath(f, root) for f in forms)} under {path} not read: a Kaggle "
                  "competition's form for answers, not data", flush=True)
        files = [f for f in files if f not in forms]
    if fmt:
        return fs, root, files, fmt
    said = [said_format(f) for f in files]
    order = list(dict.fromkeys([*SUFFIXES.values(), *ARRAY_FORMATS]))
    if (fmt := max(filter(None, said), key=lambda kind: (said.count(kind), -order.index(kind)), default=None)) is None:
        with fs.open_input_stream(files[0], compression=None) as fh:
            if _is_pickle(fh.read(2)):  # CIFAR-10's python batches (data_batch_1, ...), named for no format
                raise DataError(_pickled(storage.uri(fs, files[0])))
        infer_format(files[0])  # says what to do
    if say and (others := [f for f, kind in zip(files, said, strict=True) if kind != fmt]):
        shown = ", ".join(posixpath.relpath(f, root) for f in others[:3]) + (", ..." if len(others) > 3 else "")
        print(f"data: {len(others)} file(s) under {path} not read, their names saying no file of the data's format "
              f"({fmt}): {shown}", flush=True)
    return fs, root, [f for f, kind in zip(files, said, strict=True) if kind == fmt], fmt


def _is_pickle(head: bytes) -> bool:
    """Whether a file starts as Python's pickles of protocol 2 and later do: the PROTO opcode and its number."""
    return len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5


def _pickled(path: str) -> str:
    return (f"{path} is a Python pickle, which is not read: unpickling runs whatever code the file holds. Save its "
            "arrays with numpy (np.savez('data.npz', x=images, y=labels); CIFAR-10's batches: x_train, y_train, "
            "x_test, y_test) or its table as Parquet or CSV, and give that file")


# Files that describe a dataset beside its data, never data: Hugging Face's save_to_disk writes them beside its
# Arrow files, Kaggle's API beside a dataset's
DESCRIPTIONS = ("dataset_info.json", "state.json", "dataset_dict.json", "dataset-metadata.json")

# A Kaggle competition's form for answers beside its train.csv and test.csv (sample_submission.csv,
# gender_submission.csv): the ids and the label column, never data
SUBMISSION = re.compile(r"(.*[-_.])?submission([-_.].*)?", re.IGNORECASE)


def said_format(path: str) -> str | None:
    """The format a file's name says, or None (a README beside the data, a file named without a suffix)."""
    try:
        return infer_format(path)
    except DataError:
        return None


def names_data(path: str) -> bool:
    """Whether a file's name says it holds data: a format read here, or one refused by its name (an archive, a
    pickle, an old spreadsheet), which reading then refuses with what to give instead."""
    return (said_format(path) is not None or storage.zip_archive(path) is not None
            or path.lower().rstrip("/").endswith(ARCHIVES + PICKLES + SPREADSHEETS + AUDIO))


def walk(fs, root: str, shown: str, skip: tuple[str, ...] = ()):
    """Files under root (or root itself, a file) depth first in name order, hidden and _-prefixed
    names left out: lazily, so a small max_bytes lists only the directories it reads."""
    try:
        info = fs.get_file_info(root)
    except OSError as e:
        raise DataError(f"cannot reach data at {shown!r}: {e}") from None
    if info.type.name == "NotFound":
        if shown.startswith(storage.WEB):
            raise DataError(f"data URL {shown!r} gives no file: {storage.web_failure(shown)}; set data.path to the "
                            "URL of a file")
        relative = "://" not in shown and not os.path.isabs(os.path.expanduser(shown))
        raise DataError(f"data path {shown!r} does not exist" + (f" (a relative path is read from the working "
                        f"directory, {os.getcwd()}, not the config's)" if relative else "")
                        + ": set data.path to a file or directory")
    if info.type.name != "Directory":
        yield root
        return
    yield from _walk_dir(fs, root, skip)


def _walk_dir(fs, directory: str, skip: tuple[str, ...]):
    from pyarrow.fs import FileSelector

    entries = sorted(fs.get_file_info(FileSelector(directory)), key=lambda e: e.base_name)
    if any(entry.base_name == storage.STORAGE_MARK for entry in entries):  # runs/ in the data's folder: no data
        return
    for entry in entries:
        if entry.base_name.startswith((".", "_")) or entry.base_name in skip:
            continue
        if entry.is_file:
            yield entry.path
        elif entry.type.name == "Directory":
            yield from _walk_dir(fs, entry.path, skip)


# A file's format by its suffix. CSV, TSV and JSON Lines files may also be compressed (.csv.gz, ...): pyarrow
# decompresses them as it reads. Feather (Arrow IPC) and Parquet compress inside the file.
SUFFIXES = {"parquet": "parquet", "pq": "parquet", "csv": "csv", "tsv": "tsv", "jsonl": "jsonl", "ndjson": "jsonl",
            "json": "json",
            "feather": "feather", "arrow": "feather", "xlsx": "excel", "xlsm": "excel", "npz": "npz",
            **dict.fromkeys(IMAGE_SUFFIXES, "images"), "txt": "texts"}


TEXT_FORMATS = ("csv", "tsv", "jsonl", "json")


ARRAY_FORMATS = ("npz", "idx")  # files of whole arrays (arrayfiles.py)


FOLDERS = ("images", "texts")  # a file per sample, in a directory per class (folders.py)


IDX_NAME = re.compile(r".*idx\d-ubyte(\.gz)?", re.IGNORECASE)  # train-images-idx3-ubyte, t10k-labels.idx1-ubyte.gz


COMPRESSED = ("gz", "bz2", "zst", "lz4")


AUDIO = (".wav", ".mp3", ".flac", ".ogg", ".m4a", ".aac", ".opus")  # sound: refused with what to make of it
SPREADSHEETS = (".xls", ".ods")  # tables too, in formats not read here (Excel 97's, OpenDocument's): refused


PICKLES = (".pkl", ".pickle", ".pt", ".pth", ".joblib")  # Python pickles (torch.save, joblib.dump too): refused


# The data.* fields that say how a table file is read: a file of new rows (evaluate --data, predict --input) is read
# as the model's training read its data
READ_AS = ("encoding", "sheet", "header", "column_names", "blank_values", "label_column", "image_dir")


def read_as(path: str, trained: dict, **given) -> dict:
    """The data.* fields to read a file of new rows with (evaluate --data, predict --input): as the model's training
    read its data (`trained`: its data section; READ_AS, and its format where the file's name says none), less what
    is `given` (--encoding, --sheet)."""
    return ({k: v for k, v in trained.items() if k in READ_AS} | {"format": format_of(path, trained.get("format"))}
            | {k: v for k, v in given.items() if v})


# files of files not read: a zip is read as the folder it packs (storage.filesystem), a compressed tar could only
# be read member by member from its start
ARCHIVES = (".tar", ".tgz", ".tar.gz", ".tar.bz2", ".tar.xz", ".7z", ".rar")


def format_of(path: str, trained: str | None) -> str | None:
    """The format that a file's name says, else `trained`, the training data's data.format: a holdout file named
    as the training file was (iris.data, read with data.format: csv). None: found from the files."""
    try:
        return infer_format(path)
    except DataError:
        if path.lower().rstrip("/").endswith(ARCHIVES + PICKLES):  # refused whatever training read
            raise
        return trained


def infer_format(path: str) -> str:
    if path.lower().rstrip("/").endswith(ARCHIVES):
        raise DataError(f"{path!r} is an archive of files, which is not read as it is: unpack it (tar -xf) and give "
                        "the folder, or a file, inside; a zip archive is read as the folder it packs")
    if IDX_NAME.fullmatch(posixpath.basename(path.rstrip("/"))):
        return "idx"
    stem, suffix = posixpath.splitext(path.lower())
    if suffix.lstrip(".") in COMPRESSED and SUFFIXES.get(posixpath.splitext(stem)[1].lstrip(".")) in TEXT_FORMATS:
        suffix = posixpath.splitext(stem)[1]
    fmt = SUFFIXES.get(suffix.lstrip("."))
    if suffix in PICKLES:
        raise DataError(_pickled(repr(path)))
    if suffix in AUDIO:
        raise DataError(f"{path!r} is audio, which no model here reads: they take tables, images and texts. Make "
                        "each clip an image (its spectrogram, saved with librosa or torchaudio) in a directory per "
                        "class, or a row of features in a table, and give those")
    if suffix in SPREADSHEETS:
        raise DataError(f"{path!r} is a spreadsheet workbook in a format not read here: save it as an Excel "
                        "workbook (.xlsx) or its sheet as CSV (File > Save As) and give that file")
    if fmt is None:
        formats = ", ".join(dict.fromkeys([*SUFFIXES.values(), *ARRAY_FORMATS]))
        raise DataError(f"cannot tell the format of {path!r} from its name: set data.format to one of {formats}, "
                        "or name the file by its format (.csv, .parquet, .png, ...; a CSV, TSV, JSON Lines or JSON "
                        "file may be compressed: .csv.gz, "
                        f"{', '.join('.' + c for c in COMPRESSED[1:])})")
    return fmt


def read_image_files(path: str) -> tuple[list[str], list[bytes]]:
    """An image file, or the image files under a directory, as they are: the inputs of `orchestrator
    predict --input`, which the model decodes as its training did. Their paths, and their bytes."""
    fs, _, files, _ = data_files(path, "images", None)
    files = image_files(files, path)
    contents = []
    for f in files:
        contents.append(read_file(fs, f))
        image_shape(contents[-1], storage.uri(fs, f))  # an unreadable file is named here, not as "instance 7"
    return [storage.uri(fs, f) for f in files], contents


def read_text_files(path: str, how: FilesData) -> tuple[list[str], list[str]]:
    """The text files under a directory, each one text: the inputs of `orchestrator predict --input` for a model
    trained on a folder of them, read as its training read them (`how`: .txt files, or every file with data.format
    texts, as 20 Newsgroups' files are named by number; data.encoding). Their paths, and their texts."""
    fs, _, files, _ = data_files(path, how.format, None)
    texts = [decode_text(read_file(fs, f), storage.uri(fs, f), how.encoding) for f in files]
    return [storage.uri(fs, f) for f in files], texts


def decode_text(raw: bytes, shown: str, encoding: str) -> str:
    """A text file's text (a UTF-8 byte-order mark left out), or a DataError naming it and data.encoding."""
    try:
        return raw.decode(encoding).removeprefix("\ufeff")
    except UnicodeDecodeError as e:
        raise DataError(f"{shown} is not {encoding} text ({e.reason} at byte {e.start}): set data.encoding "
                        "(cp1252, latin-1, ...)") from None


def read_file(fs, path: str) -> bytes:
    with fs.open_input_file(path) as fh:
        return fh.read()


def in_folder_of(path: str, relative: str) -> str:
    """`relative` (a path, or a URI as it is) in the folder that holds `path`."""
    if "://" in relative or os.path.isabs(os.path.expanduser(relative)):
        return relative
    return posixpath.join(posixpath.dirname(path.rstrip("/")), relative) if "://" in path else os.path.join(
        os.path.dirname(os.path.abspath(os.path.expanduser(path))), relative)


def image_dir_named(path: str, cells: np.ndarray, most_files: int = 200_000) -> str | None:
    """The folder, as data.image_dir says it, holding the image files that most of a column's first cells name (by
    file name, or name less its suffix), below the folder that holds `path` (a local table file): a table of ids
    beside its images (Kaggle's train.csv beside train/) read without data.image_dir. None where there are none,
    or none among the first `most_files` files."""
    wanted = {_named(c) for c in cells[:20] if not is_blank(c)}
    if "://" in path or not wanted or any(len(name.split()) > 1 for name in wanted):  # names, free text: no files
        return None
    base = os.path.dirname(os.path.abspath(os.path.expanduser(path)))
    hits: set[str] = set()  # the folders holding wanted names
    found: set[str] = set()
    seen = 0
    for directory, folders, names in os.walk(base):
        folders[:] = sorted(f for f in folders if not f.startswith("."))
        for name in names:
            if is_image_file(name) and (key := name if name in wanted else os.path.splitext(name)[0]) in wanted:
                hits.add(os.path.relpath(directory, base))
                found.add(key)
        if len(found) == len(wanted) or (seen := seen + len(names)) > most_files:
            break  # every name found, or enough looked through
    if len(found) * 2 < len(wanted):
        return None
    return os.path.commonpath(list(hits)) or "."  # train/cat and train/dog: train


def refer_images(columns: dict[str, np.ndarray], image_dir: str, endpoint_url: str | None = None,
                 skip: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """`columns` with the column (not one of `skip`) whose cells name image files under `image_dir` holding those
    files (images.ImageFile, read as they are decoded): by their path below it, their name, or their name less
    its suffix (Kaggle's train.csv of ids beside train/). DataError where no column names them, or a cell names
    no image file there."""
    fs, root, files, _ = data_files(image_dir, "images", endpoint_url)
    index: dict[str, str] = {}
    for f in image_files(files, image_dir):
        name = posixpath.basename(f)
        stem = posixpath.splitext(name)[0]
        for key in (posixpath.relpath(f, root), name, stem, *([str(int(stem))] if stem.isdigit() else [])):
            index.setdefault(key, f)  # 0042.png: a CSV reader's 42 too
    candidates = [c for c, values in columns.items() if c not in skip and values.dtype.kind in "OUSiu"]

    def names_images(values: np.ndarray) -> bool:  # most of its first cells: a file missing is named below
        first = [_named(v) for v in values[:20] if not is_blank(v)]
        return bool(first) and sum(cell in index for cell in first) * 2 >= len(first)

    if (column := next((c for c in candidates if names_images(columns[c])), None)) is None:
        example = posixpath.relpath(next(iter(index.values())), root)
        shown = "; ".join(f"{c!r}: {[str(v) for v in columns[c][:2]]}" for c in candidates[:5]) or "none"
        raise DataError(f"no column names the image files under {image_dir} (such as {example!r}) by their path "
                        f"below it, their name or their name less its suffix; the columns: {shown}. Is it their "
                        "folder (data.image_dir; for new rows, --image-dir)?")
    cells = np.empty(len(columns[column]), dtype=object)
    for row, value in enumerate(columns[column]):
        if is_blank(value):
            continue  # a row without an image: refused by name as its image is decoded
        if (found := index.get(_named(value))) is None:
            raise DataError(f"row {row + 1} of column {column!r} names {str(value)!r}, which is no image file under "
                            f"{image_dir}")
        cells[row] = ImageFile(fs, found)
    return {**columns, column: cells}


def _named(cell) -> str:
    """The file name a cell holds: its text, or its whole number (an id a CSV reader made a number)."""
    return str(cell).strip()


def holds_images(directory: str) -> bool:
    """Whether a directory (local, or a prefix on S3 or GCS) holds an image file."""
    _, _, files, _ = data_files(directory, "images", None)
    return any(is_image_file(f) for f in files)


def image_files(files: list[str], shown: str) -> list[str]:
    """The image files among files (an image folder may hold notes, labels, ...)."""
    if not (images := [f for f in files if is_image_file(f)]):
        raise DataError(f"{shown!r} holds no image files ({', '.join('.' + s for s in IMAGE_SUFFIXES)})")
    return images


LIKELY_LABELS = ("y", "target", "targets", "labels", "class", "classes", "category", "outcome")


def not_in_data(what: str, missing: list[str], columns: list[str], fix: str) -> DataError:
    """The error for columns a config names that the data lacks: the columns it has (the first 30), and the one
    each most likely means, the same name in other case or spacing, else the nearest by spelling; else `fix`."""
    lowered = {c.strip().lower(): c for c in columns}
    guesses = [near[0] for name in missing
               if (near := [lowered[k] for k in [name.strip().lower()] if k in lowered]
                   or difflib.get_close_matches(name, columns, n=1, cutoff=0.75))]
    shown = str(columns[:30])[:-1] + f", ... ({len(columns):,} in all)]" if len(columns) > 30 else str(columns)
    return DataError(f"{what} not in the data; columns: {shown}; "
                     + (f"did you mean {', '.join(map(repr, guesses))}?" if guesses else fix))
