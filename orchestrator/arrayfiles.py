"""Files of whole arrays: NumPy's NPZ (Keras' mnist.npz) and the IDX files that MNIST, Fashion-MNIST and KMNIST
come as (train-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz, what torchvision downloads to MNIST/raw).

Each file's arrays are named columns for data.py, a row of each per sample; arrays named for their splits (x_train,
x_test; an IDX file's train or t10k) are joined, with each row's split (splits.of_arrays).
"""

from __future__ import annotations

import io
import posixpath
import re

import numpy as np

from orchestrator import splits
from orchestrator.datafiles import IDX_NAME
from orchestrator.errors import DataError

# the data type an IDX file's third byte names (big-endian: the format's own byte order)
IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_arrays(fs, files: list[str], fmt: str) -> dict[str, np.ndarray]:
    """The arrays of NPZ files (`fmt` "npz") or of IDX files ("idx") by name: an NPZ file's own names; of IDX files,
    `image` (the inputs: an array of two or more dimensions) and `label` (one dimension), with the split a file's
    name says (image_train, label_test: t10k is MNIST's test split)."""
    return read_npz(fs, files) if fmt == "npz" else read_idx(fs, files)


def columns_of(arrays: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """The columns of `read_arrays`' arrays, those named for their splits joined, and each row's split word (None
    where the names say no split)."""
    joined = splits.of_arrays(arrays)
    return joined if joined else (arrays, None)


def read_npz(fs, files: list[str]) -> dict[str, np.ndarray]:
    parts: dict[str, list[np.ndarray]] = {}
    for f in files:
        with fs.open_input_file(f) as fh:
            try:
                npz = np.load(io.BytesIO(fh.read()), allow_pickle=False)  # never unpickle user files
                if parts and set(npz.files) != set(parts):
                    raise DataError(f"{f} holds arrays {npz.files}, {files[0]} holds {list(parts)}: every file of "
                                    "the data needs the same arrays")
                for key in npz.files:
                    parts.setdefault(key, []).append(npz[key])
            except (ValueError, OSError) as e:
                raise DataError(f"{f}: not a plain-array NPZ file ({e})") from None
    return {k: np.concatenate(v) for k, v in parts.items()}


def read_idx(fs, files: list[str]) -> dict[str, np.ndarray]:
    """The IDX files among `files` (others, a README, are left out), each read once where both it and its .gz are
    there (torchvision keeps both), as `image` and `label` arrays of the split each name says."""
    chosen: dict[str, str] = {}
    for f in sorted(f for f in files if IDX_NAME.fullmatch(posixpath.basename(f))):
        chosen.setdefault(re.sub(r"\.gz$", "", f, flags=re.IGNORECASE), f)  # the unpacked file sorts first
    if not chosen:
        raise DataError(f"no IDX files (such as train-images-idx3-ubyte.gz) among {files[:3]}")
    found: dict[tuple[str, str | None], list[str]] = {}
    arrays = {}
    split_of = {f: splits.split_word(posixpath.basename(f)) for f in chosen.values()}
    rank = {word: code for code, words in enumerate(splits.SPLIT_NAMES) for word in words}
    for f in sorted(split_of, key=lambda f: rank.get((split_of[f] or "").lower(), -1)):  # train's rows first
        array, word = _idx_array(fs, f), split_of[f]
        role = "label" if array.ndim == 1 else "image"
        found.setdefault((role, word), []).append(f)
        arrays[role + (f"_{word}" if word else "")] = array
    if twice := next(((key, paths) for key, paths in found.items() if len(paths) > 1), None):
        (role, word), paths = twice
        raise DataError(f"{len(paths)} IDX files hold {role}s{f' of the {word} split' if word else ''} "
                        f"({', '.join(posixpath.basename(f) for f in paths)}): give data.path a folder of one "
                        "dataset's files, an images file and a labels file for each split")
    return arrays


def _idx_array(fs, f: str) -> np.ndarray:
    """An IDX file's array (decompressed where its name ends .gz): two zero bytes, the type's byte, the number of
    dimensions; each dimension's size, a big-endian 32-bit integer; then the values, in C order."""
    try:
        with fs.open_input_stream(f, compression="gzip" if f.lower().endswith(".gz") else None) as fh:
            raw = fh.read()
    except OSError as e:  # a .gz name on a file that is not gzip
        raise DataError(f"cannot read {f}: {str(e).strip().splitlines()[0]}") from None
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in IDX_TYPES or raw[3] == 0 or len(raw) < 4 + 4 * raw[3]:
        raise DataError(f"{f} is not an IDX file: it does not start with IDX's magic number")
    dims = np.frombuffer(raw, ">u4", count=raw[3], offset=4).astype(np.int64).tolist()
    dtype = np.dtype(IDX_TYPES[raw[2]])
    start = 4 + 4 * raw[3]
    if len(raw) - start != int(np.prod(dims)) * dtype.itemsize:
        raise DataError(f"{f} holds {len(raw) - start:,} bytes of values where its header says {dims} "
                        f"{dtype.name} values: is it cut short?")
    return np.frombuffer(raw, dtype, offset=start).reshape(dims).astype(dtype.newbyteorder("="))
