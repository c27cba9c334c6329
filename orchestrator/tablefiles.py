"""Table files read into columns: CSV and TSV (their dialect, encoding and header found from the file), JSON Lines,
JSON, Parquet, Feather and Arrow streams, Excel workbooks, one file or a directory of them (partitioned Hive-style,
as Spark, Ray Data and pandas write them), read with pyarrow in this process (datafiles.py finds the files).
"""

from __future__ import annotations

import codecs
import json
import posixpath
import re

import numpy as np

from orchestrator import storage
from orchestrator.categories import is_number, texts
from orchestrator.config import FilesData
from orchestrator.errors import DataError


def read_table(fs, root: str, files: list[str], fmt: str, how: FilesData) -> tuple[dict[str, np.ndarray], set[str]]:
    """The files' columns, matched by name, read with pyarrow in this process, with the columns that
    directories below root name (see `partition_values`), and those of them that hold a pandas
    DataFrame's index rather than data (see `index_columns`). A CSV or TSV file is text in `how.encoding`,
    its cells separated and its decimals written as `csv_dialect` finds, its columns named as `csv_names` finds;
    of an Excel workbook, `how.sheet` (default the first) is read. Not with Ray Data: it
    started a local Ray for `orchestrator evaluate --data` (17.1 s for a 178-row CSV here, 3.6 s
    without), or joined one already running on the machine."""
    import pyarrow as pa
    import pyarrow.feather
    import pyarrow.json
    import pyarrow.parquet

    tables, index, partitioned, layout = [], set(), set(), None
    for f in files:
        try:
            if fmt == "parquet":
                with fs.open_input_file(f) as fh:
                    table = pyarrow.parquet.read_table(fh)
            elif fmt == "feather":
                table = _read_arrow(fs, f)
            elif fmt == "jsonl":  # decompressed as its suffix says (.gz, ...); JSON is UTF-8
                with fs.open_input_stream(f, compression="detect") as fh:
                    table = pyarrow.json.read_json(fh)
            elif fmt == "json":
                table = _read_json_table(fs, f)
            elif fmt == "excel":
                table = _read_workbook(fs, f, how.sheet)
            else:  # its columns named as the first file's are: by its first row, or by csv_names
                if layout is None or layout[0] is None:
                    table = _read_csv(fs, f, fmt, how.encoding)
                layout = layout or csv_names(table, how, storage.uri(fs, f))
                if layout[0] is not None:
                    table = _read_csv(fs, f, fmt, how.encoding, *layout)
            names = table.column_names  # decoded here: a binary file's header is not UTF-8
        except (pa.ArrowException, OSError, ValueError) as e:
            raise DataError(f"cannot read {storage.uri(fs, f)} as {fmt}: {str(e).strip().splitlines()[0]}") from None
        if twice := sorted({n for n in names if names.count(n) > 1}):
            raise DataError(f"{storage.uri(fs, f)} names columns {twice} more than once: give each column its own name")
        for name, value in partition_values(f, root).items():
            if name not in names:
                table = table.append_column(name, pa.array([value] * table.num_rows, pa.string()))
                partitioned.add(name)
        names = table.column_names
        if tables and set(names) != set(tables[0].column_names):
            raise DataError(f"the data files differ in their columns: {storage.uri(fs, files[0])} has "
                            f"{tables[0].column_names}, {storage.uri(fs, f)} has {names}; a directory's files are "
                            "read as one table, so every file needs the same columns: give data.path the file of the "
                            "data (of a Kaggle competition's, its train.csv), or a directory of its files alone")
        tables.append(table)
        index |= index_columns(table)
    tables = [t for t in tables if t.num_rows]  # a header-only CSV has untyped (null) columns
    if not tables:
        raise DataError("the data files hold no rows")
    columns = {name: np.concatenate([_column(t, name) for t in tables]) for name in tables[0].column_names}
    if how.blank_values:
        columns = {name: _blanked(values, how.blank_values) for name, values in columns.items()}
    for name in partitioned:  # numbers where every directory names one, as pyarrow reads them
        for dtype in (np.int64, np.float64):
            try:
                columns[name] = columns[name].astype(dtype)
                break
            except (TypeError, ValueError):
                pass
    return columns, index


# The first bytes of a CSV or TSV file, for `csv_dialect` to read its header and cells from
SNIFF_BYTES = 1 << 16
DELIMITERS = (",", ";", "\t", "|")
# A cell of a semicolon file that is a number with decimals after a comma (4081,96), or after a point (4081.96)
DECIMALS = {mark: re.compile(r'(?:^|;)"?-?\d+' + re.escape(mark) + r'\d+"?(?=;|\r?$)', re.MULTILINE) for mark in ",."}


def csv_dialect(head: str, fmt: str) -> tuple[str, str]:
    """(the delimiter, the decimal point) of a CSV or TSV file, from its first characters, as pandas'
    and DuckDB's readers sniff them. The header line says the delimiter: the format's own (a comma, a
    tab) where the header holds one, else the one of ; tab | , it holds most (quoted names left out).
    Spreadsheets write CSV with semicolons where the locale's decimal point is a comma (Excel in
    Germany, France, Spain, ...): in a semicolon file, cells of digits with one comma (4081,96), more of
    them than cells with a decimal point, say that the decimals follow a comma."""
    header = re.sub(r'"[^"]*"', "", head.split("\n", 1)[0])
    usual = "\t" if fmt == "tsv" else ","
    counts = {d: header.count(d) for d in DELIMITERS}
    delimiter = usual if counts[usual] or not any(counts.values()) else max(DELIMITERS, key=counts.get)
    if delimiter != ";":
        return delimiter, "."
    commas, points = (len(DECIMALS[mark].findall(head)) for mark in ",.")
    return delimiter, "," if commas > points else "."


def _blanked(values: np.ndarray, markers: list[str]) -> np.ndarray:
    """A column with its cells written as one of `markers` (data.blank_values: '?', 'n/a', '-999') blank; a column of
    text that held some, numbers where its other cells all are."""
    if values.dtype.kind in "iuf":
        numbers = [float(m) for m in markers if is_number(m)]
        marked = np.isin(values, numbers)
        return np.where(marked, np.nan, values) if marked.any() else values
    if not holds_text(values):
        return values
    cells = np.char.strip(texts(values))
    marked = np.isin(cells, [m.strip() for m in markers])
    if not marked.any():
        return values
    values = np.where(marked, None, values.astype(object))
    try:
        return np.array([np.nan if is_blank(v) else float(v) for v in values], np.float64)
    except (TypeError, ValueError):
        return values


def first_row_is_data(table, blank_values: list[str]) -> bool:
    """Whether the first row of a CSV file, read as the names of its columns (`table`), is data like the rows
    below it, as in files without a header row (UCI's iris.data, Spark's CSV parts): each of its cells is a
    number over a column of numbers, a value that its column of text holds again, or a mark of a missing value
    (`blank_values`). Numbers that count up (0, 1, 2, ..., as pandas names a frame's columns; years) are names."""
    import pyarrow as pa
    import pyarrow.compute as pc

    numbers, marks = [], {m.strip() for m in blank_values}
    for name, column in zip(table.column_names, table.columns, strict=True):
        if name.strip() in marks:
            continue
        if pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
            try:
                numbers.append(float(name))
            except ValueError:
                return False
        elif not (pa.types.is_string(column.type) and pc.any(pc.equal(column, name.strip())).as_py()):
            return False  # a name, or a cell of another kind (a date, true): read as a header, as it was
    counting = len(numbers) > 1 and len(numbers) == table.num_columns and all(
        b - a == 1 for a, b in zip(numbers, numbers[1:]))
    return table.num_rows > 0 and not counting


def csv_names(table, how: FilesData, uri: str) -> tuple[list[str] | None, bool]:
    """(the names of a CSV file's columns, whether its first row is skipped) as data.header and data.column_names
    say; where data.header is unset, the first row is data unless it holds data.column_names, or, where those are
    unset too, as `first_row_is_data` finds (and says so); (None, False): its first row names the columns.
    `table`: the file read with its first row as names."""
    width, names = table.num_columns, how.column_names
    if names and len(names) == width + 1 and how.label_column in names:  # rows to predict, without the label
        names = [n for n in names if n != how.label_column]
    if names and len(names) != width:
        raise DataError(f"data.column_names names {len(names)} columns, and {uri} has {width}: name each column, "
                        "in order")
    if how.header is not None:
        is_data = not how.header
    else:  # with names given, the file most likely has none: its first row is data unless it is those names
        is_data = table.column_names != names if names else first_row_is_data(table, how.blank_values)
    if how.header is None and is_data:
        first = ",".join(table.column_names)
        print(f"data: {uri} has no header row: its first row ({first[:60]}{'...' * (len(first) > 60)}) is data like "
              "the rows below it, and the columns are named " + (
                  "by data.column_names" if names else f"column1 to column{width} (name them in data.column_names)")
              + "; if that row holds the names, set data.header: true", flush=True)
    if not is_data:
        return names, names is not None
    return names or [f"column{i + 1}" for i in range(width)], False


def _read_csv(fs, f: str, fmt: str, encoding: str, names: list[str] | None = None, skip_first: bool = False):
    """A CSV or TSV file (decompressed as its suffix says: .gz, ...) in its dialect (`csv_dialect`), as text in
    `encoding`, or in the one its byte-order mark declares (Excel saves "Unicode text" in UTF-16). Its columns
    named by its first row, or by `names` (the first row skipped, or read as data)."""
    import pyarrow as pa
    import pyarrow.compute
    import pyarrow.csv

    with fs.open_input_stream(f, compression="detect") as fh:
        head = fh.read(SNIFF_BYTES)
    encoding = next((name for bom, name in BYTE_ORDER_MARKS if head.startswith(bom)), encoding)
    utf8 = codecs.lookup(encoding).name == "utf-8"  # pyarrow's own (a UTF-8 mark left out); others Python decodes
    delimiter, decimal = csv_dialect(head.decode(encoding, errors="replace").removeprefix("\ufeff"), fmt)
    try:
        with fs.open_input_stream(f, compression="detect") as fh:
            table = pyarrow.csv.read_csv(fh, pyarrow.csv.ReadOptions(encoding="utf8" if utf8 else encoding,
                                                                     column_names=names, skip_rows=int(skip_first)),
                                         pyarrow.csv.ParseOptions(delimiter=delimiter),
                                         pyarrow.csv.ConvertOptions(decimal_point=decimal))
        names = table.column_names  # pyarrow decodes the header here
    except UnicodeDecodeError as e:  # in the header, or, in an encoding Python decodes, anywhere
        raise _not_encoded(storage.uri(fs, f), "a line", e.object[max(0, e.start - 16):e.end + 16], encoding) from None
    for i, (name, column) in enumerate(zip(names, table.columns, strict=True)):
        if pa.types.is_binary(column.type):  # how pyarrow reads cells that are not UTF-8
            row, raw = next((i, v) for i, v in enumerate(column.to_pylist()) if not _utf8(v))
            raise _not_encoded(storage.uri(fs, f), f"row {row + 1:,} of column {name!r}", raw, encoding)
        if pa.types.is_string(column.type):  # "39, State-gov": spaces beside a separator are layout, not the value
            table = table.set_column(i, name, pyarrow.compute.utf8_trim_whitespace(column))
    return table.rename_columns([name.strip() for name in names])  # and in the header: "age, work"


def _read_arrow(fs, f: str):
    """An Arrow file (Feather v2, pandas' to_feather) or an Arrow stream (Hugging Face's save_to_disk writes its
    .arrow files so; pyarrow's file reader refuses them, "Not an Arrow file")."""
    import pyarrow as pa
    import pyarrow.feather
    import pyarrow.ipc

    with fs.open_input_file(f) as fh:
        if fh.read(6) == b"ARROW1":  # the file format's magic; a stream starts with its schema's message
            fh.seek(0)
            return pyarrow.feather.read_table(fh)
        fh.seek(0)
        try:
            return pyarrow.ipc.open_stream(fh).read_all()
        except pa.ArrowInvalid:  # nor a stream: Feather v1, which the feather reader takes
            fh.seek(0)
            return pyarrow.feather.read_table(fh)


def _read_json_table(fs, f: str):
    """A JSON file of a table (decompressed as its suffix says): a list of rows, [{"age": 41, ...}, ...], as
    APIs and pandas' to_json(orient="records") write it (or under one key of an object, as APIs answer:
    {"count": 50, "results": [...]}), a row per line (as Spark writes .json files), or
    pandas' other layouts of a table: {"columns": [...], "data": [[...], ...]} (orient split) or {"age":
    {"0": 41, ...}, ...} (its default, by column)."""
    import pandas as pd

    with fs.open_input_stream(f, compression="detect") as fh:
        text = fh.read().decode("utf-8-sig")  # JSON is UTF-8; a byte-order mark left out
    try:
        content = json.loads(text)
    except json.JSONDecodeError as e:
        try:  # JSON Lines, as Spark's DataFrame.write.json() writes part-*.json files
            content = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError:
            raise DataError(f"cannot read {storage.uri(fs, f)} as JSON: {e}") from None
    def rows(value) -> bool:
        return isinstance(value, list) and bool(value) and all(isinstance(row, dict) for row in value)

    if isinstance(content, dict) and len(wrapped := [k for k, v in content.items() if rows(v)]) == 1 and not (
            "columns" in content):  # as APIs answer: {"count": 50, "results": [{...}, ...]}
        print(f"data: {storage.uri(fs, f)} holds its rows under {wrapped[0]!r}: read those", flush=True)
        content = content[wrapped[0]]
    if isinstance(content, list) and all(isinstance(row, dict) for row in content):
        frame = pd.DataFrame.from_records(content)
    elif isinstance(content, dict) and isinstance(content.get("columns"), list) and "data" in content:
        frame = pd.DataFrame(content["data"], columns=content["columns"])
    elif isinstance(content, dict) and content and all(isinstance(v, (dict, list)) for v in content.values()):
        frame = pd.DataFrame(content)
    else:
        raise DataError(f"{storage.uri(fs, f)} is not a table in JSON: give a list of rows, [{{\"age\": 41, ...}}, "
                        '...], or pandas\' to_json() of a DataFrame')
    return _table_of_frame(frame)


def _table_of_frame(frame):
    """A pandas DataFrame (read from JSON or a workbook) as a table: column names as text, and a column of
    numbers and text as text, as a CSV reader reads it."""
    import pyarrow as pa

    frame.columns = [str(c) for c in frame.columns]
    for c in frame.columns:
        if frame[c].dtype == object:  # numbers and text: each cell as text, a blank one blank
            frame[c] = [None if v is None or v != v else v if isinstance(v, (list, dict)) else str(v)
                        for v in frame[c]]
    return pa.Table.from_pandas(frame, preserve_index=False)


def _read_workbook(fs, f: str, sheet: str | None):
    """A sheet of an Excel workbook (.xlsx) as a table, read with pandas and openpyxl (its XML through
    defusedxml): its first row the column names, a date cell a date, a number a number. A column that holds
    both numbers and text is text, as a CSV reader reads it."""
    import io
    import zipfile

    import pandas as pd

    with fs.open_input_file(f) as fh:
        book = io.BytesIO(fh.read())
    try:
        sheets = pd.ExcelFile(book, engine="openpyxl").sheet_names
        if sheet is not None and sheet not in sheets:
            raise DataError(f"{storage.uri(fs, f)} has no sheet {sheet!r}: its sheets are {sheets} (data.sheet; "
                            "--sheet for evaluate --data and predict --input)")
        frame = pd.read_excel(book, sheet_name=sheet or 0, engine="openpyxl")
        if sheet is None and len(sheets) > 1:
            print(f"data: {storage.uri(fs, f)} has sheets {sheets}: read the first, {sheets[0]!r} (data.sheet, or "
                  "--sheet for evaluate --data and predict --input, names another)", flush=True)
    except (zipfile.BadZipFile, KeyError, OSError) as e:
        raise DataError(f"cannot read {storage.uri(fs, f)} as an Excel workbook (.xlsx): {e}") from None
    return _table_of_frame(frame)


# Marks at the start of a text file that declare its encoding; UTF-32's before UTF-16's, which they begin with
BYTE_ORDER_MARKS = [(codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8"),
                    (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16")]


def _utf8(raw: bytes | None) -> bool:
    try:
        raw is None or raw.decode()
    except UnicodeDecodeError:
        return False
    return True


def _not_encoded(uri: str, where: str, raw: bytes, encoding: str) -> DataError:
    """The error for a file that is not text in `encoding`, with the encoding it reads in, where that is Windows'."""
    hint = "give the file's encoding"
    try:
        if codecs.lookup(encoding).name == "utf-8":
            hint = (f"it reads as cp1252 ({raw.decode('cp1252')!r}), the encoding Excel on Windows saves CSV files "
                    "in: give that encoding")
    except UnicodeDecodeError:
        pass
    return DataError(f"{uri} is not {encoding} text: {where} holds the bytes {raw!r}; {hint} (data.encoding in the "
                     "config; --encoding for evaluate --data and predict --input), or save it as UTF-8 "
                     "(Excel: CSV UTF-8)")


def partition_values(path: str, root: str) -> dict[str, str | None]:
    """The column values that the directories between root and the file hold, Hive-style: Spark, Ray
    Data (`write_parquet(partition_cols=...)`) and pandas (`to_parquet(partition_cols=...)`) store a
    column's value in a directory name (`label=cat/part-0.parquet`), not in the files below it."""
    from urllib.parse import unquote

    below = posixpath.relpath(posixpath.dirname(path), root) if path != root else "."
    pairs = (part.split("=", 1) for part in below.split("/") if "=" in part)
    return {unquote(k): None if v == "__HIVE_DEFAULT_PARTITION__" else unquote(v) for k, v in pairs}


def index_columns(table) -> set[str]:
    """The columns where pandas stored a DataFrame's index: row numbers or ids, not features. Parquet
    names them in its pandas metadata (`__index_level_0__`, or the index's name); `to_csv` writes the
    index as a first column with an empty name. Pandas itself reads them back as the index again, not as
    columns, and training on row numbers would learn the file's order."""
    named = (table.schema.pandas_metadata or {}).get("index_columns", [])  # a RangeIndex is metadata, no column
    return {c for c in named if isinstance(c, str)} | ({""} & set(table.column_names))


TENSOR_TYPE = "ray.data.arrow_tensor"  # Ray Data's fixed-shape tensor columns (v1 and v2)


def _column(table, name: str) -> np.ndarray:
    """A column as numpy; a tensor column written by Ray Data as [N, *shape]. pyarrow reads one as a
    list per row, with the shape in its type (ray.data imported) or in the field's metadata (not)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    field, head = table.schema.field(name), table[name].slice(0, 10_000)
    if (pa.types.is_string(field.type) or pa.types.is_large_string(field.type)) and (
            pc.count_distinct(head).as_py() <= len(head) // 2):  # categories, not ids or free text
        # each distinct text one Python object, which the cells share: a column of 1,000,000 cells of 5 cities had
        # been 1,000,000 objects (58 MB), and is 8 MB of references
        encoded = pc.dictionary_encode(table[name].combine_chunks())
        words = np.array([*encoded.dictionary.to_pylist(), None], dtype=object)
        return words[encoded.indices.fill_null(len(words) - 1).to_numpy()]
    values = table[name].to_numpy(zero_copy_only=False)
    if getattr(field.type, "extension_name", "").startswith(TENSOR_TYPE):
        return np.stack(values).reshape(len(values), *field.type.shape)
    if (field.metadata or {}).get(b"ARROW:extension:name", b"").decode().startswith(TENSOR_TYPE):
        return np.stack(values).reshape(len(values), *json.loads(field.metadata[b"ARROW:extension:metadata"]))
    return values


def blank_cells(values: np.ndarray) -> np.ndarray:
    """Which cells are empty: null, NaN, NaT or blank text."""
    if values.dtype.kind in "mM":
        return np.isnat(values)
    if values.dtype.kind == "f":
        return np.isnan(values)
    if values.dtype.kind in "OUS":
        return np.array([is_blank(v) for v in values], dtype=bool)
    return np.zeros(len(values), dtype=bool)


def holds_text(column: np.ndarray) -> bool:
    """NPZ gives text as a string array, Parquet and CSV readers as an object array of str."""
    kind = column.dtype.kind
    return kind in "US" or (kind == "O" and any(isinstance(v, (str, bytes)) for v in column))


def is_blank(value) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value)) or (
        isinstance(value, (str, bytes)) and not value.strip())
