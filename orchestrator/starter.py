"""The starter config: what trains on data given in place of a YAML experiment (`orchestrator train titanic.zip`),
a model for the data's kind, every other field its default."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
from pathlib import Path

from orchestrator.categories import categories_of, names_rows, sentence_words, texts
from orchestrator.config import FilesData, apply_overrides, parse, with_value
from orchestrator.data import counts_rows
from orchestrator.datafiles import ARRAY_FORMATS, FOLDERS, data_files, names_data
from orchestrator.tablefiles import holds_text, read_table


STARTER_MODELS = {"images": "cnn", "idx": "cnn", "texts": "rnn"}  # the rest (tables, NPZ): mlp
# what `tune` and `run` search for a starter config: the fields that matter to every model, around their defaults
STARTER_SEARCH = {"num_samples": 8, "space": {"optim.lr": {"loguniform": [1e-4, 1e-2]},
                                              "model.dropout": {"uniform": [0.0, 0.5]},
                                              "optim.weight_decay": {"loguniform": [1e-6, 1e-2]}}}


def starter_config(path: str, overrides: list[str] = ()) -> dict | None:
    """The config that trains on data given in place of a YAML file (`orchestrator train train.csv
    data.label_column=Survived`), with the overrides: the files at `path`, a model for their kind (STARTER_MODELS;
    for a table whose one input is free text, an rnn reading it), every other field its default; said. None where
    `path` is not data: a .yaml file, or a file whose name says no data format."""
    if path.lower().endswith((".yaml", ".yml")) or not (os.path.isdir(path) or "://" in path or names_data(path)):
        return None
    found = data_files(path, None, None, say=False)
    model = STARTER_MODELS.get(found[3], "mlp")
    where = Path(path.rstrip("/"))  # titanic/train.csv, titanic.zip/train.csv: titanic; `.`: the folder's name
    where = where if "://" in path else where.expanduser().resolve()
    folder = re.sub(r"\.zip$", "", where.parent.name, flags=re.IGNORECASE)
    stem = folder if where.stem.lower() in ("train", "training", "data", "dataset") else where.stem
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("._-") or "data"
    raw = apply_overrides({"name": name, "data": {"name": "files", "path": path}, "model": {"name": model},
                           "tune": json.loads(json.dumps(STARTER_SEARCH))}, overrides)
    text = ""
    if model == "mlp" and raw["model"]["name"] in ("mlp", "rnn", "transformer") and not raw["data"].get("text_column"):
        if column := lone_text_column(parse(FilesData, raw["data"], f"{path} (data: the starter config)"), found):
            raw = with_value(raw, "data.text_column", column)
            if raw["model"]["name"] == "mlp" and not any(o.startswith("model.name=") for o in overrides):
                raw = with_value(raw, "model.name", "rnn")
            text = f" reading the text in column {column!r} (data.text_column)"
    tune = raw.get("tune") or {}
    search = (f"; tune and run search {', '.join(tune['space'])} over {tune.get('num_samples', 12)} trials"
              if isinstance(tune.get("space"), dict) else "")
    print(f"config: {path} is data, not a YAML experiment: trained with model {raw['model']['name']}{text} and every "
          f"other field's default{search}; set any field with section.field=value (data.label_column=Survived, "
          "model.name=cnn, train.epochs=30), or write a YAML (see jobs/)", flush=True)
    return raw


def lone_text_column(cfg: FilesData, found: tuple) -> str | None:
    """The column of free text that is a table's one input but for ids (SST-2's `sentence`, beside its `idx` and
    the label), found in its first file: the input of a model of text. None where there is no such column, or
    another input beside it, or the data is no table. `found`: data_files' answer for cfg.path."""
    fs, root, files, fmt = found
    if fmt in ARRAY_FORMATS or fmt in FOLDERS:
        return None
    with contextlib.redirect_stdout(io.StringIO()):  # quiet: the training that follows reads it and says so
        columns, index = read_table(fs, root, files[:1], fmt, cfg)
    inputs = [c for c in columns if c != cfg.label_column and c not in index and not counts_rows(columns[c])]
    if len(inputs) != 1 or not holds_text(values := columns[inputs[0]]):
        return None
    found = categories_of(texts(values))
    return inputs[0] if names_rows(found, len(values)) and sentence_words(found) is not None else None
