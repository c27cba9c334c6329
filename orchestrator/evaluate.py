"""Evaluate a checkpoint in this process, without Ray: on a split of the data it was trained on, or
on other labelled data.

    orchestrator evaluate runs/digits-cnn-.../epoch-0020 --split test
    orchestrator evaluate runs/iris-.../epoch-0030 --data holdout.csv
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from orchestrator import data, engine
from orchestrator.blanks import unfilled
from orchestrator.checkpoint import read_checkpoint
from orchestrator.config import FilesData
from orchestrator.datafiles import read_as
from orchestrator.errors import ConfigError, DataError
from orchestrator.lm import GPT


def evaluate_model(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, num_classes: int, batch_size: int,
                   with_confusion: bool = False) -> dict:
    """Loss, accuracy, macro precision/recall/F1 (a language model: per next byte, and perplexity and
    bits per byte) of `model` on inputs x with labels y (and "confusion", rows truth and columns
    prediction, if asked)."""
    batches = engine.batches_from_tensors(*engine.as_tensors(x, y), batch_size)
    stats = engine.evaluate(model, batches, num_classes, torch.device("cpu"))
    metrics = engine.metrics_from_stats(stats, language_model=isinstance(model, GPT))
    return {**metrics, "confusion": stats["confusion"].tolist()} if with_confusion else metrics


def baseline(info: dict, y: np.ndarray, balanced: bool) -> dict | None:
    """What a model must beat: the accuracy on labels y of always answering the training split's most common class
    (scikit-learn's DummyClassifier, "most_frequent"), that class, and its share of the training rows. `info`: a
    model's (data.Arrays.info); `balanced`: whether training weighed the classes (train.class_weight). None for a
    language model, or a checkpoint that did not keep its training split's class counts."""
    counts = info.get("class_counts")
    if not counts:
        return None
    most = int(np.argmax(counts))
    return {"answer": info["label_names"][most], "share": round(counts[most] / sum(counts), 4),
            "accuracy": round(float(np.mean(y == most)), 4), "balanced": balanced}


def column_importance(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, features: list[tuple[str, str]],
                      num_classes: int, batch_size: int, repeats: int = 5, max_rows: int = 5_000) -> list[dict]:
    """How much a model of a table relies on each column: its accuracy on (x, y) less its accuracy with the
    column's cells shuffled across the rows, all its features together (a category's 0/1s, a date's 7, a
    text's bytes; a blank cell moves as a blank), the mean over `repeats` shuffles: permutation importance
    (Breiman 2001; scikit-learn's permutation_importance). Columns most relied on first. `features`: x's,
    as (column, name) (blanks.table_features); at most `max_rows` rows, drawn at random."""
    rng = np.random.default_rng(0)
    if len(y) > max_rows:
        rows = rng.choice(len(y), max_rows, replace=False)
        x, y = x[rows], y[rows]

    def accuracy(inputs: np.ndarray) -> float:
        return evaluate_model(model, inputs, y, num_classes, batch_size)["accuracy"]

    columns = list(dict.fromkeys(c for c, _ in features))
    print(f"column importance: each of {len(columns)} columns shuffled {repeats} times over {len(y):,} rows",
          flush=True)
    base, out = accuracy(x), []
    for column in columns:
        cells = [i for i, (c, _) in enumerate(features) if c == column]
        drops = []
        for _ in range(repeats):
            shuffled = x.copy()
            shuffled[:, cells] = x[rng.permutation(len(x))][:, cells]
            drops.append(base - accuracy(shuffled))
        out.append({"column": column, "accuracy_drop": round(float(np.mean(drops)), 4),
                    "std": round(float(np.std(drops)), 4)})
    return sorted(out, key=lambda r: -r["accuracy_drop"])


def evaluate_checkpoint(uri: str, split: str = "test") -> dict:
    """Metrics of a checkpoint on `split`, rebuilt from its own config (same seed, same split)."""
    ckpt = read_checkpoint(uri)  # an S3-compatible endpoint comes from AWS_ENDPOINT_URL
    cfg = ckpt.config
    splits = data.load_splits(cfg.data, cfg.seed, cfg.storage.endpoint_url)
    if splits.fingerprint != ckpt.model_info["data_fingerprint"]:
        print(f"warning: the data differs from what {uri} was trained on (fingerprint changed)", file=sys.stderr)
    language_model = cfg.model.name == "gpt"  # 256 byte classes: per class says nothing
    metrics = evaluate_model(ckpt.model(), *splits.arrays[split], len(splits.label_names), cfg.train.eval_batch_size,
                             with_confusion=not language_model)
    return {
        "checkpoint": uri,
        "split": split,
        "num_rows": splits.num_rows[split],
        **({} if language_model else {"per_class": per_class_table(metrics.pop("confusion"), splits.label_names)}),
        "metrics": {f"{split}_{k}": v for k, v in metrics.items()},
        "baseline": baseline(ckpt.model_info, splits.arrays[split][1], cfg.train.class_weight == "balanced"),
    }


def per_class_table(confusion: list[list[int]], labels: list[str]) -> list[dict]:
    """Precision, recall, F1 and support (rows of the class) of each class, as scikit-learn's
    classification_report gives them."""
    cm = torch.as_tensor(confusion)
    precision, recall, f1 = engine.per_class(cm)
    return [{"class": label, "precision": round(float(p), 4), "recall": round(float(r), 4), "f1": round(float(f), 4),
             "support": int(n)} for label, p, r, f, n in zip(labels, precision, recall, f1, cm.sum(1), strict=True)]


def evaluate_on_data(uri: str, data_uri: str, encoding: str | None = None, sheet: str | None = None,
                     image_dir: str | None = None) -> dict:
    """Metrics of a classifier checkpoint on labelled data it was not trained on: a table file (CSV, Parquet,
    ...), NPZ or an image folder (a path or s3://) with the training data's label column and the model's
    feature columns. A CSV or TSV file is text in `encoding`, of a workbook `sheet` is read, and `image_dir` holds
    the image files a column names: by default the training data's."""
    ckpt = read_checkpoint(uri)
    cfg, info = ckpt.config, ckpt.model_info
    if cfg.model.name == "gpt":
        raise ConfigError(f"{uri} is a language model: evaluate it on its own text with --split")
    labels = list(info["label_names"])
    text_column, text_bytes = info.get("text_column"), info.get("text_bytes")
    read_text = info.get("text_parts") or text_column  # the text's column, or the columns joined into it
    if text_column and not text_bytes:  # read as training read it: its bytes, as many as the model takes
        inputs = {"text_column": read_text, "text_bytes": info["input_shape"][0]}
    elif text_column:  # its bytes beside the table's other columns
        inputs = {"text_column": read_text, "text_bytes": text_bytes,
                  "feature_columns": [c for c in info["feature_columns"] if c != text_column]}
    else:
        inputs = {"feature_columns": info.get("feature_columns"), "feature_shape": info["input_shape"]}
    source = FilesData(name="files", path=data_uri, **read_as(data_uri, cfg.data.model_dump(), encoding=encoding,
                                                              sheet=sheet, image_dir=image_dir), **inputs)
    arrays = data.load_arrays(source, cfg.seed, cfg.storage.endpoint_url, known=info)
    fills = info.get("blanks")
    if arrays.feature_columns and (blank := unfilled(arrays.x, fills, arrays.features())):
        fillable = (f"fills only those that training saw blank ({fills['columns']})" if fills else
                    "saw no blank cell in training")
        raise DataError(f"{data_uri}: columns {blank} have blank cells, and the model {fillable}: fill them in or "
                        "leave those rows out")
    unknown = sorted(set(arrays.label_names) - set(labels))
    if unknown:
        raise DataError(f"{data_uri}: labels {unknown} are not classes of this model ({labels})")
    y = np.array([labels.index(name) for name in arrays.label_names])[arrays.y]  # to the model's class indices
    metrics = evaluate_model(ckpt.model(), arrays.x, y, len(labels), cfg.train.eval_batch_size, with_confusion=True)
    return {"checkpoint": uri, "data": data_uri, "num_rows": len(y),
            "per_class": per_class_table(metrics.pop("confusion"), labels), "metrics": metrics,
            "baseline": baseline(info, y, cfg.train.class_weight == "balanced")}
