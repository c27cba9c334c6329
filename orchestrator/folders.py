"""Folders of a file per sample, images or texts: each file's class from its directory (cat/1.png, as
torchvision's ImageFolder and scikit-learn's load_files take them), a label=cat/ directory or its own name
(cat.0.jpg), and its split from a directory above (train/cat/1.png) where one says it."""

from __future__ import annotations

import concurrent.futures
import functools
import posixpath
import re

import numpy as np

from orchestrator import splits, storage
from orchestrator.config import FilesData
from orchestrator.datafiles import decode_text, image_files, read_file
from orchestrator.errors import DataError
from orchestrator.images import decode_images
from orchestrator.tablefiles import partition_values


def classes_of(root: str, files: list[str], cfg: FilesData) -> tuple[list[str | None], list[str], str | None]:
    """Each file's class and split in a folder of a directory per class (cat/1.png), or of split directories each
    with its class directories (train/cat/1.png; 20 Newsgroups' 20news-bydate-train/sci.space/60804: a name that
    says a split, splits.split_word), or of label=cat/ directories, with split=test/ ones where data.split_column
    names that key. The class is None for a file in no class directory. Last, what names the splits, for
    messages (splits.named), or None where nothing does."""
    where = [[] if w == ["."] else w for w in (posixpath.relpath(posixpath.dirname(f), root).split("/") for f in files)]
    by_directory = (cfg.split_column is None and any(len(w) >= 2 for w in where)
                    and all(splits.split_word(w[0]) for w in where if w))
    classes, split_names = [], []
    for f, below in zip(files, where, strict=True):
        keys = partition_values(f, root)
        if by_directory:
            split_names.append(splits.split_word(below[0]) if below else "")
            below = below[1:]
        elif cfg.split_column:
            split_names.append(keys.get(cfg.split_column) or "")
        named = [d for d in below if "=" not in d]  # a class directory, not a key=value one
        classes.append(keys.get(cfg.label_column, named[0] if named else None))
    source = ("its directory (train/, val/, test/)" if by_directory else
              f"data.split_column {cfg.split_column!r}" if cfg.split_column else None)
    return classes, split_names, source


def read_images(fs, root: str, files: list[str], cfg: FilesData) -> tuple[np.ndarray, list[str], np.ndarray | None]:
    """Images in one directory per class, as torchvision's ImageFolder takes them (`cat/1.png`), or in
    `label=cat/` directories, or named for their classes: [N, C, H, W] float32 pixels (0-255), and each image's
    class. data.feature_shape [C, H, W] converts every image (C 1: grayscale, 3: RGB) and resizes it; without it
    every image must have the first's size, and C follows the first image's colours. Files of other kinds in the
    folder are left out. Where the folder's directories are splits, each with its class directories
    (`train/cat/1.png`, `test/dog/2.png`), as datasets are often shipped, or where data.split_column names a
    directory key (`split=test/`), each image is in the split its directory names: last, each one's split
    (splits.named), or None."""
    files = image_files(files, cfg.path)
    labels, split_names, source = classes_of(root, files, cfg)
    if all(label is None for label in labels) and (named := classes_in_names(files)):
        labels = named
        print(f"data: the images of {cfg.path} are in no class directory, and each one's name says its class: "
              f"{posixpath.basename(files[0])}, {labels[0]} ({len(set(labels))} classes)", flush=True)
    if None in labels:
        raise DataError(f"{storage.uri(fs, files[labels.index(None)])} has no class: put each image in a directory "
                        f"named for its class ({cfg.path.rstrip('/')}/cat/1.png, {cfg.path.rstrip('/')}/dog/2.png)")
    images, kept = decode_images([(functools.partial(read_file, fs, f), storage.uri(fs, f)) for f in files],
                                 cfg.feature_shape, skip_unreadable=True)
    split_names = [split_names[i] for i in kept] if split_names else []
    return images, [labels[i] for i in kept], splits.named(np.array(split_names), source) if split_names else None


def classes_in_names(files: list[str]) -> list[str] | None:
    """Each file's class where a folder names its files for their classes, and numbers them (Kaggle's dogs vs
    cats: cat.0.jpg, dog.12499.jpg; Oxford's pets: Abyssinian_1.jpg, american_bulldog_10.jpg): the name less its
    number, in letters (not IMG_20240101_1.jpg's date). None where a name says none, or the names say one class,
    or nearly as many as there are files."""
    named = re.compile(r"(?P<kind>[^\W\d_]+(?:[-_. ][^\W\d_]+)*)[-_. ]*\d+")
    found = [m["kind"] if (m := named.fullmatch(posixpath.splitext(posixpath.basename(f))[0])) else None
             for f in files]
    kinds = len(set(found))
    return found if None not in found and 2 <= kinds <= len(files) / 5 else None


UNLABELLED = ("unsup", "unlabeled", "unlabelled")  # directories of texts without a class: IMDB's train/unsup/


def read_texts(fs, root: str, files: list[str], cfg: FilesData) -> tuple[dict, FilesData, np.ndarray | None, str]:
    """Texts in one directory per class, a file each, as scikit-learn's load_files takes them (bbc/sport/001.txt;
    IMDB's aclImdb/train/pos/0_9.txt, split directories as an image folder's): the column `text` (data.text_column's
    name, where it names one), the input, and the label, as a table's columns with the config that reads them so;
    each text's split and what names the splits, where its directory says one. Files in no class directory (IMDB's
    urls_pos.txt) and in directories of unlabelled texts (its train/unsup/) are left out, and said."""
    if files == [root]:  # one file: UCI's tables come as .txt too (data_banknote_authentication.txt)
        raise DataError(f"{cfg.path!r} is one text file, where format texts reads a folder of them, a directory per "
                        "class: if it holds a table, set data.format: csv (or tsv)")
    classes, split_names, source = classes_of(root, files, cfg)
    kept = [i for i, c in enumerate(classes) if c is not None and c.lower() not in UNLABELLED]
    if not kept:
        raise DataError(f"{cfg.path!r} holds no text files in class directories: put each text in a directory named "
                        f"for its class ({cfg.path.rstrip('/')}/pos/1.txt, {cfg.path.rstrip('/')}/neg/2.txt)")
    read = set(kept)
    if left := [f for i, f in enumerate(files) if i not in read]:
        shown = ", ".join(posixpath.relpath(f, root) for f in left[:3]) + (", ..." if len(left) > 3 else "")
        print(f"data: {len(left):,} file(s) not read, in no class directory or in one of texts without a class "
              f"({'/, '.join(UNLABELLED)}/): {shown}", flush=True)
    with concurrent.futures.ThreadPoolExecutor(16) as pool:  # 50,000 small files; on S3, a request each
        raw = list(pool.map(functools.partial(read_file, fs), [files[i] for i in kept]))
    name = cfg.text_column if isinstance(cfg.text_column, str) else "text"
    columns = {name: np.array([decode_text(r, storage.uri(fs, files[i]), cfg.encoding) for r, i in zip(raw, kept)],
                              dtype=object),
               cfg.label_column: np.array([classes[i] for i in kept], dtype=object)}
    named = np.array([split_names[i] for i in kept]) if source else None
    return columns, cfg.model_copy(update={"text_column": name}), named, source or ""
