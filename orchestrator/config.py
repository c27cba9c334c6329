"""The typed experiment config: parsed strictly from YAML at the edge, then trusted.

    cfg = load_config("jobs/digits-cnn.yaml", ["train.num_workers=4", "optim.lr=0.01"])

Unknown keys and wrong types raise ConfigError naming the field (and the nearest valid key).
"""

from __future__ import annotations

import collections.abc
import hashlib
import json
import math
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from orchestrator.errors import ConfigError
from orchestrator.explain import explain, named_section, tagged_union_members


class Section(BaseModel):
    """Base of every config section: unknown keys and silent type coercion are errors."""

    model_config = ConfigDict(extra="forbid", strict=True)

    @model_validator(mode="before")
    @classmethod
    def _named_by_a_word(cls, data):
        """A section chosen by its name may be given as the name: `model: cnn` is `model: {name: cnn}`, as
        `optim: adam` and `tune.scheduler: fifo` are."""
        if not isinstance(data, dict):
            return data
        return {key: {"name": value} if isinstance(value, str) and named_section(cls.model_fields.get(key)) else value
                for key, value in data.items()}


# ---- data -------------------------------------------------------------------------------


class AugmentConfig(Section):
    enabled: bool = Field(False, description="Apply random shift and noise (and flips, with flip) to training images.")
    max_shift_px: int = Field(1, ge=0, description="Largest random shift of an image, pixels.")
    noise_std: float = Field(0.05, ge=0, description="Gaussian noise, in units of the feature std.")
    flip: bool = Field(False, description="Mirror half the training images left to right, at random, as "
                       "torchvision's RandomHorizontalFlip: for photos, where a cat facing left is a cat too; not for "
                       "digits or text, which a mirror makes other signs.")


class Fractions(Section):
    val_fraction: float = Field(0.15, gt=0, lt=0.5, description="Share of rows held out for validation.")
    test_fraction: float = Field(0.15, gt=0, lt=0.5, description="Share of rows held out for the test.")


class SplitFields(Fractions):
    augment: AugmentConfig = Field(default_factory=AugmentConfig, description="Training-time augmentation.")


class DigitsData(SplitFields):
    name: Literal["digits"] = Field(description="scikit-learn's bundled 8x8 handwritten digits (1,797 images).")


class SyntheticData(SplitFields):
    name: Literal["synthetic"] = Field(description="Generated Gaussian-cluster classification data.")
    num_samples: int = Field(10_000, ge=10, description="Rows to generate, all splits together.")
    feature_shape: list[int] = Field([32], min_length=1, description="Shape of one sample's features.")
    num_classes: int = Field(10, ge=2, description="Number of classes.")
    class_separation: float = Field(1.5, gt=0, description="Distance between class centres, in noise std.")


def check_encoding(name: str, field: str) -> None:
    """ValueError naming `field` unless `name` is a text encoding Python knows."""
    import codecs

    try:
        text = codecs.lookup(name)._is_text_encoding  # base64 and the like turn bytes into bytes
    except LookupError:
        text = False
    if not text:
        raise ValueError(f"{field} {name!r} is not a text encoding: give one such as utf-8, cp1252 (Excel on "
                         "Windows), latin-1, utf-16 or shift_jis")


class FilesData(SplitFields):
    name: Literal["files"] = Field(description="User data in Parquet, CSV, TSV, JSON Lines, Feather (Arrow IPC), "
                                   "Excel (.xlsx), NPZ, IDX (MNIST's files) "
                                   "or image files, from a local path or s3://.")
    path: str = Field(description="A file or a directory of files: local path, s3://bucket/prefix or gs://, or an "
                      "https:// URL of a file (as pandas' read_csv(url) reads it). Images: a "
                      "directory with one directory of images per class (cat/1.png, dog/2.jpg).")
    format: Literal["parquet", "csv", "tsv", "jsonl", "json", "feather", "excel", "npz", "idx", "images",
                    "texts"] | None = (
        Field(None, description="File format; inferred from the file suffix when empty (.parquet or .pq, .csv, .tsv, "
        ".jsonl or .ndjson, .json (a list of rows), .feather or .arrow, .xlsx or .xlsm: excel, .npz; "
        "train-images-idx3-ubyte(.gz) and the like: idx, arrays `image` and `label`; .txt: texts, a file each in "
        "a directory per class (texts: every file, where they are named by number as 20 Newsgroups'); .png, .jpg, "
        ".bmp, .gif, .webp, .tif: images; a CSV, TSV, JSON Lines or JSON file may be compressed: .csv.gz, "
        ".tsv.zst, .jsonl.bz2, ...)."
    ))
    encoding: str = Field("utf-8", description="The text encoding of CSV and TSV files, any Python codec: cp1252 "
                          "for a CSV that Excel on Windows saved (not as CSV UTF-8), latin-1, shift_jis, utf-16, ... "
                          "The cells' separator (a comma, a semicolon, a tab) and decimal point are read from the "
                          "file.")
    sheet: str | None = Field(None, description="The sheet of an Excel workbook (.xlsx) to read, by name: "
                              "default the first.")
    header: bool | None = Field(None, description="Whether the first row of a CSV or TSV file names its columns. "
                                "Default: found from the file: its first row is data, not names, where each of its "
                                "cells is a number over a column of numbers or a value that its column of text holds "
                                "again (UCI's iris.data, Spark's CSV parts).")
    column_names: list[str] | None = Field(None, description="Names of the columns of a CSV or TSV file, in order: "
                                           "for a file without a header row (default names: column1, column2, ...), "
                                           "or instead of its header's, with data.header: true. A file of rows to "
                                           "predict may lack the label's.")
    blank_values: list[str] = Field([], description="Cells that mark a value as missing, as pandas' na_values: "
                                    "['?'] for UCI's files, ['n/a', '-'], ['-999']: blank, in any column, compared "
                                    "without the spaces around them (a blank number is filled: data.fill_blanks; a "
                                    "blank label leaves its row out). A column of text whose other cells are all "
                                    "numbers is numbers.")
    image_dir: str | None = Field(None, description="A folder of image files that a column of the table names, by "
                                  "their path below it, their name, or their name less its suffix (Kaggle's train.csv "
                                  "of ids and labels beside train/): that column is the input, its images read as an "
                                  "image folder's are. Relative to the folder that holds data.path.")
    label_column: str = Field("label", description="Column (or NPZ array) holding the class label.")
    feature_columns: list[str] | None = Field(
        None, description="Feature columns (or one tensor column / NPZ array); all but the label, in the file's order, "
        "when empty. A text column is categories: a 0/1 feature per value (one-hot); a column of dates 7 features "
        "(dates.py). With data.text_column: the columns beside the text (none, when empty)."
    )
    feature_shape: list[int] | None = Field(
        None, description="Reshape each sample's features to this shape, e.g. [1, 28, 28] for images. Image files: "
        "[C, H, W] converts each to grayscale (C 1) or RGB (C 3) and resizes it to H x W (default: every image as "
        "the first is)."
    )
    fill_blanks: bool = Field(
        True, description="A blank cell of a numeric column (an empty CSV field, a null): filled with the column's "
        "median over the training rows, with a 0/1 feature per such column saying which rows were blank; false "
        "refuses them. A blank cell of a text column is a category of its own either way."
    )
    text_column: str | list[str] | None = Field(
        None, description="A column of free text (reviews, messages), for text classification: its UTF-8 bytes, read "
        "in order by model.name rnn or transformer. The whole input, or, with data.feature_columns, beside those "
        "columns (a review with its rating): the text read into a vector, joined to the table's features. A list "
        "of columns (a title and a body) is one text: each column's text in turn, a separator byte between them."
    )
    split_column: str | None = Field(
        None, description="A column that names each row's split, for a fixed test set or a split made elsewhere: "
        "train, val (or validation, valid, dev) or test, in any case; it is not a feature. A split that no row "
        "names is drawn from the train rows by data.val_fraction or data.test_fraction.")
    order_column: str | None = Field(
        None, description="Split in time: the rows in this column's order (dates or times, or numbers), the last "
        "data.test_fraction of them the test split and the data.val_fraction before those the validation split, "
        "so that the model is scored on rows later than any it learned from, as it will be used. It stays a "
        "feature unless data.feature_columns leaves it out.")
    text_bytes: int = Field(256, ge=1, le=8192, description="With data.text_column: bytes of each text the model "
                            "reads; a longer text is cut to its first text_bytes, a shorter one padded. At most "
                            "8192: an rnn steps through every byte, a transformer attends from each to each.")

    @model_validator(mode="after")
    def _encoding(self):
        check_encoding(self.encoding, "data.encoding")
        return self

    @model_validator(mode="after")
    def _split(self):
        if self.split_column and self.order_column:
            raise ValueError("data.split_column names each row's split, and data.order_column splits the rows in "
                             "its order: set one of them")
        for field in ("split_column", "order_column"):
            if getattr(self, field) == self.label_column:
                raise ValueError(f"data.{field} names the label column {self.label_column!r}: name another column")
        if self.split_column in [*(self.feature_columns or []), *self.text_columns]:
            raise ValueError(f"data.split_column {self.split_column!r} says which split a row is in; it cannot be "
                             "read as a feature too: leave it out of data.feature_columns and data.text_column")
        return self

    @model_validator(mode="after")
    def _column_names(self):
        names = self.column_names
        if names is not None and (not names or not all(n.strip() for n in names)):
            raise ValueError("data.column_names needs a name for each column of the file, none of them blank")
        if names and (twice := sorted({n for n in names if names.count(n) > 1})):
            raise ValueError(f"data.column_names lists {twice} more than once: give each column its own name")
        return self

    @model_validator(mode="after")
    def _feature_columns(self):
        columns = self.feature_columns or []
        if self.label_column in columns:
            raise ValueError(f"data.feature_columns names the label column {self.label_column!r}: the model would "
                             "read the answer it is to predict (and need it to serve); leave it out")
        if twice := sorted({c for c in columns if columns.count(c) > 1}):
            raise ValueError(f"data.feature_columns lists {twice} more than once: list each column once")
        return self

    @property
    def text_columns(self) -> list[str]:
        """The columns of free text: none, one, or those joined into one text."""
        return [] if self.text_column is None else [self.text_column] if isinstance(self.text_column, str) \
            else list(self.text_column)

    @property
    def text_name(self) -> str | None:
        """What the text is called in the model's columns: its column, or its columns joined by '+'."""
        return "+".join(self.text_columns) or None

    @model_validator(mode="after")
    def _text(self):
        if self.text_column is None:
            return self
        if not self.text_columns:
            raise ValueError("data.text_column lists no column: name the column of text, or a list of them")
        if twice := sorted({c for c in self.text_columns if self.text_columns.count(c) > 1}):
            raise ValueError(f"data.text_column lists {twice} more than once: list each column once")
        beside = ["data.feature_shape"] if self.feature_shape else []
        if self.augment.enabled:
            beside.append("data.augment.enabled (it shifts images)")
        if beside:
            raise ValueError(f"data.text_column is read as text, not an image: remove {', '.join(beside)}")
        if self.label_column in self.text_columns:
            raise ValueError(f"data.text_column and data.label_column both name {self.label_column!r}")
        if both := [c for c in self.text_columns if c in (self.feature_columns or [])]:
            raise ValueError(f"data.feature_columns names the text column {both[0]!r}: list only the columns "
                             "beside it")
        return self


class TextData(Fractions):
    name: Literal["text"] = Field(description="Byte-level text for a language model (model.name: gpt), local or s3://.")
    path: str | None = Field(
        None, description="A text file or a directory of them: local path or s3://bucket/prefix, or an https:// URL "
        "of a file; "
        "default: the Python standard library's source on this machine (offline, on every node)."
    )
    suffixes: list[str] | None = Field(
        None, description="Read only files ending in one of these, e.g. ['.py', '.md']; default: .py for the "
        "standard library, every file otherwise."
    )
    max_bytes: int = Field(4_000_000, ge=1024, description="Read files in name order until the corpus holds this many bytes.")
    block_size: int = Field(128, ge=2, description="Context length: bytes per training sequence.")


DataConfig = Annotated[Union[DigitsData, SyntheticData, FilesData, TextData], Field(discriminator="name")]


# ---- model ------------------------------------------------------------------------------


class ModelFields(Section):
    dropout: float = Field(0.1, ge=0, lt=1, description="Dropout probability in hidden layers.")


class MLPConfig(ModelFields):
    name: Literal["mlp"] = Field(description="Multi-layer perceptron over the flattened features.")
    hidden_sizes: list[int] = Field([256, 128], min_length=1, description="Width of each hidden layer.")
    activation: Literal["relu", "gelu", "tanh"] = Field("relu", description="Hidden-layer activation.")


class CNNConfig(ModelFields):
    name: Literal["cnn"] = Field(description="Conv-BN-ReLU-pool blocks and a fully connected head.")
    channels: list[int] = Field([32, 64], min_length=1, description="Output channels of each conv block.")
    kernel_size: int = Field(3, ge=1, description="Convolution kernel size, pixels (odd keeps the size).")
    hidden_size: int = Field(128, ge=1, description="Width of the fully connected head.")


class RNNConfig(ModelFields):
    name: Literal["rnn"] = Field(description="LSTM/GRU over a sequence (an image's rows, or a [T, F] sample).")
    cell: Literal["lstm", "gru"] = Field("lstm", description="Recurrent cell type.")
    hidden_size: int = Field(128, ge=1, description="Hidden state size per direction.")
    num_layers: int = Field(1, ge=1, description="Stacked recurrent layers.")
    bidirectional: bool = Field(False, description="Read the sequence both ways.")


class TransformerConfig(ModelFields):
    name: Literal["transformer"] = Field(description="Small pre-norm encoder classifier over patches/tokens.")
    patch_size: int = Field(2, ge=1, description="Side of a square image patch, pixels (image inputs).")
    d_model: int = Field(64, ge=8, description="Token embedding width.")
    num_heads: int = Field(4, ge=1, description="Attention heads; must divide d_model.")
    num_layers: int = Field(2, ge=1, description="Encoder layers.")
    ff_size: int = Field(128, ge=1, description="Feed-forward hidden width.")

    @model_validator(mode="after")
    def _heads_divide(self):
        if self.d_model % self.num_heads:
            raise ValueError(f"num_heads ({self.num_heads}) must divide d_model ({self.d_model})")
        return self


class GPTConfig(ModelFields):
    name: Literal["gpt"] = Field(description="Decoder-only Transformer language model over bytes (data.name: text).")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on embeddings, attention and residuals.")
    n_layer: int = Field(4, ge=1, description="Transformer blocks.")
    n_head: int = Field(4, ge=1, description="Attention heads; must divide d_model.")
    d_model: int = Field(128, ge=8, description="Embedding width.")
    activation_checkpointing: bool = Field(
        False, description="Recompute each block's activations in the backward pass: less memory, ~30% more compute."
    )

    @model_validator(mode="after")
    def _heads_divide(self):
        if self.d_model % self.n_head:
            raise ValueError(f"n_head ({self.n_head}) must divide d_model ({self.d_model})")
        return self


ModelConfig = Annotated[Union[MLPConfig, CNNConfig, RNNConfig, TransformerConfig, GPTConfig],
                        Field(discriminator="name")]


# ---- optimization -----------------------------------------------------------------------


class OptimConfig(Section):
    name: Literal["sgd", "adam", "adamw", "rmsprop"] = Field("adamw", description="Optimizer.")
    lr: float = Field(1e-3, gt=0, description="Peak learning rate, after warmup.")
    momentum: float = Field(0.9, ge=0, lt=1, description="Momentum (sgd, rmsprop).")
    nesterov: bool = Field(False, description="Nesterov momentum (sgd only).")
    betas: list[float] = Field([0.9, 0.999], min_length=2, max_length=2, description="Adam betas.")
    weight_decay: float = Field(0.0, ge=0, description="L2 penalty (decoupled for adamw) on weight matrices.")
    l1: float = Field(0.0, ge=0, description="L1 penalty coefficient on weight matrices, added to the loss.")
    schedule: Literal["constant", "step", "cosine"] = Field("cosine", description="LR schedule after warmup.")
    warmup_epochs: float = Field(0.0, ge=0, description="Linear warmup from 0 to lr, epochs.")
    step_size_epochs: int = Field(10, ge=1, description="Epochs between LR drops (step schedule).")
    gamma: float = Field(0.1, gt=0, le=1, description="LR multiplier at each drop (step schedule).")
    min_lr_ratio: float = Field(0.0, ge=0, le=1, description="Final LR as a fraction of lr (cosine).")
    grad_clip_norm: float | None = Field(None, gt=0, description="Clip the global gradient norm to this.")
    grad_accum_steps: int = Field(1, ge=1, description="Micro-batches accumulated per optimizer step.")

    @model_validator(mode="after")
    def _nesterov_needs_sgd(self):
        if self.nesterov and (self.name != "sgd" or self.momentum == 0):
            raise ValueError("nesterov needs name: sgd and momentum > 0")
        return self


# ---- training ---------------------------------------------------------------------------


class TrainConfig(Section):
    epochs: int = Field(20, ge=1, description="Passes over the training split.")
    batch_size_per_worker: int = Field(64, ge=1, description="Samples per micro-batch on each worker.")
    eval_batch_size: int = Field(1024, ge=1, description="Samples per batch in evaluation.")
    num_workers: int = Field(1, ge=1, description="Ray Train workers (DDP processes).")
    use_gpu: bool = Field(False, description="One GPU per worker (CUDA + NCCL).")
    cpus_per_worker: float = Field(1, gt=0, description="CPUs reserved per worker; also torch's thread count.")
    gpus_per_worker: float | None = Field(None, gt=0, description="GPUs per worker when use_gpu (fractions ok).")
    resources_per_worker: dict[str, float] = Field({}, description="Extra custom resources per worker.")
    precision: Literal["fp32", "bf16", "fp16"] = Field("fp32", description="Autocast dtype on GPU.")
    tf32: bool = Field(True, description="TF32 tensor-core matmuls for fp32 on GPU (Ampere and newer).")
    compile: bool = Field(False, description="torch.compile the model (GPU: worth it for runs of more than a few minutes).")
    strategy: Literal["ddp", "fsdp"] = Field(
        "ddp", description="ddp: a full replica per worker; fsdp: parameters, gradients and optimizer state sharded "
        "across workers (FSDP2), for models too big for one GPU; checkpoints are sharded too."
    )
    prefetch_batches: int = Field(
        2, ge=0, description="Batches copied ahead to the GPU (from pinned memory) while the current one trains."
    )
    streaming: bool = Field(
        False, description="Stream each worker's shard of the Ray Datasets every epoch, for data too big to hold "
        "in memory; by default each worker takes its share of the arrays from Ray's object store once."
    )
    num_to_keep: int = Field(2, ge=1, description="Checkpoints kept, best by checkpoint_metric, besides the "
                             "latest (which resume needs).")
    checkpoint_metric: Literal["val_accuracy", "val_f1", "val_precision", "val_recall", "val_loss", "train_loss"] = Field(
        "val_accuracy", description="Metric that ranks checkpoints (and picks the one evaluated on test)."
    )
    checkpoint_mode: Literal["max", "min"] = Field("max", description="Whether a larger metric is better.")
    early_stopping_patience: int | None = Field(
        None, ge=1, description="Stop once checkpoint_metric has not improved for this many epochs in a row (the best "
        "checkpoint is the result, as always); none: run every epoch."
    )
    max_failures: int = Field(1, ge=-1, description="Worker-group restarts from the last checkpoint (-1: no limit).")
    class_weight: Literal["none", "balanced"] = Field(
        "none", description="balanced: weigh each class's training loss by rows / (classes x its rows in the training "
        "split), as scikit-learn's class_weight='balanced', so that a rare class counts as much as a common one "
        "(imbalanced data: fraud, faults, rare diseases). Validation loss stays unweighted."
    )
    run_name: str | None = Field(
        None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description="Run name; the same name resumes the run."
    )

    @model_validator(mode="after")
    def _gpu_options(self):
        if not self.use_gpu and self.gpus_per_worker:
            raise ValueError("gpus_per_worker needs use_gpu: true")
        return self


class StorageConfig(Section):
    path: str = Field("runs", description="Root for runs and checkpoints: local directory or s3://bucket/prefix.")
    endpoint_url: str | None = Field(
        None, description="S3-compatible endpoint (MinIO, moto); default: AWS_ENDPOINT_URL or AWS."
    )
    region: str | None = Field(None, description="S3 region; default from the AWS environment.")


# ---- hyperparameter search --------------------------------------------------------------

DIMENSION_KINDS = ("uniform", "loguniform", "randint", "choice", "grid")
METRICS = Literal["val_accuracy", "val_f1", "val_precision", "val_recall", "val_loss", "train_loss"]


class SchedulerConfig(Section):
    name: Literal["asha", "hyperband", "pbt", "fifo"] = Field("asha", description="Trial scheduler.")
    grace_period: int = Field(2, ge=1, description="Epochs every trial runs before it may be stopped (ASHA).")
    reduction_factor: float = Field(3, gt=1, description="Keep 1/reduction_factor of trials at each rung.")
    max_epochs: int | None = Field(None, ge=1, description="Epochs of a full trial; default train.epochs.")
    perturbation_interval: int = Field(2, ge=1, description="Epochs between exploit/explore steps (PBT).")


class SearchConfig(Section):
    name: Literal["random", "grid", "optuna"] = Field("random", description="How configurations are proposed.")
    seed: int | None = Field(None, description="Seed of the search; default the experiment seed.")


class TuneConfig(Section):
    space: dict[str, dict[str, Any]] = Field(
        min_length=1,
        description="Dotted config field -> one of {uniform: [lo, hi]}, {loguniform: [lo, hi]}, "
        "{randint: [lo, hi]}, {choice: [...]}, {grid: [...]}.",
    )
    metric: METRICS = Field("val_accuracy", description="Metric the search optimizes.")
    mode: Literal["max", "min"] = Field("max", description="Whether a larger metric is better.")
    num_samples: int = Field(12, ge=1, description="Trials to sample (each grid point counts once per sample).")
    max_concurrent_trials: int | None = Field(None, ge=1, description="Trials at once; default: as many as fit.")
    cpus_per_trial: float = Field(1, gt=0, description="CPUs per trial (per worker when train.num_workers > 1).")
    gpus_per_trial: float = Field(0, ge=0, description="GPUs per trial (per worker when train.num_workers > 1).")
    time_budget_s: float | None = Field(None, gt=0, description="Stop starting and running trials after this, seconds.")
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig, description="Early stopping.")
    search: SearchConfig = Field(default_factory=SearchConfig, description="Search algorithm.")

    @model_validator(mode="after")
    def _dimensions(self):
        for key, dim in self.space.items():
            if len(dim) != 1 or next(iter(dim)) not in DIMENSION_KINDS:
                raise ValueError(f"space[{key!r}] must be one of {{kind: values}} with kind in {DIMENSION_KINDS}, got {dim}")
            kind, values = next(iter(dim.items()))
            if kind in ("choice", "grid"):
                if not isinstance(values, list) or not values:
                    raise ValueError(f"space[{key!r}].{kind} must be a non-empty list")
                continue
            if not (isinstance(values, list) and len(values) == 2 and all(isinstance(v, (int, float)) for v in values)):
                raise ValueError(f"space[{key!r}].{kind} must be [low, high]")
            low, high = values
            if low >= high:
                raise ValueError(f"space[{key!r}].{kind}: low ({low}) must be below high ({high})")
            if kind == "loguniform" and low <= 0:
                raise ValueError(f"space[{key!r}].loguniform needs low > 0 (got {low})")
            if kind == "randint" and not all(isinstance(v, int) for v in values):
                raise ValueError(f"space[{key!r}].randint needs integer bounds")
        if self.search.name == "grid" and any(next(iter(d)) != "grid" for d in self.space.values()):
            raise ValueError("search.name: grid needs every space entry to be {grid: [...]}")
        if self.search.name == "optuna" and (grids := [k for k, d in self.space.items() if next(iter(d)) == "grid"]):
            raise ValueError(f"search.name: optuna picks every value itself and takes no grid: make {grids} "
                             "{choice: [...]}, or use search.name random")
        if self.scheduler.name == "hyperband" and self.max_concurrent_trials:
            raise ValueError("scheduler hyperband waits for every trial of a bracket at each rung, and "
                             "max_concurrent_trials caps how many trials exist, so brackets never fill and no trial "
                             "stops early: leave max_concurrent_trials out (trials run as tune.cpus_per_trial "
                             "allows) or use scheduler asha")
        if self.scheduler.name == "pbt" and (frozen := [k for k in self.space if not k.startswith("optim.")]):
            raise ValueError(f"scheduler pbt changes values mid-trial: search only optim.* fields, not {frozen}")
        return self

    @property
    def requested_trials(self) -> int:
        """num_samples, times every grid dimension's size (Tune runs the whole grid per sample)."""
        return self.num_samples * math.prod(len(d["grid"]) for d in self.space.values() if "grid" in d)

    def candidate_values(self, key: str) -> list:
        """Values that stand for a dimension when checking that the config accepts them."""
        return list(next(iter(self.space[key].values())))


# ---- registry and tracking --------------------------------------------------------------

TEST_METRICS = Literal["test_accuracy", "test_f1", "test_precision", "test_recall", "test_loss"]
LOWER_IS_BETTER = ("test_loss",)


class RegistryConfig(Section):
    """Where `orchestrator run` registers its model, and the gates a version must pass to be promoted."""

    path: str | None = Field(None, description="Registry root: local directory or s3://; default <storage.path>/registry.")
    model_name: str | None = Field(
        None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description="Registered model name; default the experiment name."
    )
    min_metrics: dict[TEST_METRICS, float] = Field(
        {}, description="Promotion needs each of these test metrics at least this high, e.g. {test_accuracy: 0.95}."
    )
    max_metrics: dict[TEST_METRICS, float] = Field(
        {}, description="Promotion needs each of these test metrics at most this high, e.g. {test_loss: 0.3}."
    )
    compare_metric: TEST_METRICS = Field(
        "test_accuracy", description="Metric compared with the current production version (test_loss: lower is better)."
    )
    not_worse_than_production: bool = Field(
        True, description="Refuse a version whose compare_metric is worse than production's (by more than tolerance)."
    )
    tolerance: float = Field(0.0, ge=0, description="How much worse than production still passes.")
    promote: bool = Field(True, description="`orchestrator run` promotes the new version to production if it passes.")


class TrackingConfig(Section):
    mlflow: bool = Field(False, description="Log each run's params, metrics, lineage and report to MLflow (pip install mlflow).")
    mlflow_tracking_uri: str | None = Field(None, description="MLflow tracking URI; default MLFLOW_TRACKING_URI or ./mlruns.")
    mlflow_experiment: str | None = Field(None, description="MLflow experiment; default the experiment name.")


# What a search sets up once, before its trials start, so a trial cannot change it: why, and what to do
_DATA = ("it loads and splits the data once, so every trial trains on the same split. Search only data.augment.* "
         "of the data, or run one search per value")
_SEED = "it splits the data once, by seed, so every trial trains on the same split. Run one search per seed"
_PROCESSES = ("each trial's processes and resources come from train.num_workers, tune.cpus_per_trial and "
              "tune.gpus_per_trial. Set them outside tune.space")
SET_ONCE_PER_SEARCH = {"seed": _SEED, "data": _DATA, **{f"train.{k}": _PROCESSES for k in (
    "num_workers", "use_gpu", "cpus_per_worker", "gpus_per_worker", "resources_per_worker")}}


def _set_once_per_search(config: dict) -> dict:
    """{key: value} of SET_ONCE_PER_SEARCH in a config dict; data without its training-time augmentation."""
    out = {}
    for key in SET_ONCE_PER_SEARCH:
        value = config
        for part in key.split("."):
            value = value[part]
        out[key] = {k: v for k, v in value.items() if k != "augment"} if key == "data" else value
    return out


class ExperimentConfig(Section):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description="Experiment name; prefix of run names.")
    seed: int = Field(0, description="Seed for data splits, initialization and shuffling.")
    data: DataConfig = Field(description="Where the data comes from and how it is split.")
    model: ModelConfig = Field(description="Model family and size.")
    optim: OptimConfig = Field(default_factory=OptimConfig, description="Optimizer, regularization, schedule.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Distributed training and checkpoints.")
    storage: StorageConfig = Field(default_factory=StorageConfig, description="Where runs are stored.")
    tune: TuneConfig | None = Field(None, description="Hyperparameter search (orchestrator tune).")
    registry: RegistryConfig = Field(default_factory=RegistryConfig, description="Model registry and promotion gates.")
    tracking: TrackingConfig = Field(default_factory=TrackingConfig, description="MLflow tracking.")
    serve: dict[str, Any] = Field(
        {}, description="Endpoint settings for `orchestrator run` (deploy/serve.yaml's args, e.g. max_batch_size: 64)."
    )

    @model_validator(mode="after")
    def _language_model_on_text(self):
        if (self.model.name == "gpt") != (self.data.name == "text"):
            raise ValueError("model.name: gpt trains on data.name: text, and text data needs model.name: gpt")
        if self.model.name == "gpt" and self.train.class_weight != "none":
            raise ValueError("train.class_weight weighs the classes of a classifier: a language model has none")
        return self

    @model_validator(mode="after")
    def _serve_settings(self):
        if "checkpoint" in self.serve:
            raise ValueError("serve.checkpoint: `orchestrator run` serves the model it registers; leave it out")
        try:
            parse(ServeArgs, {"checkpoint": "-", **self.serve}, source="serve")
        except ConfigError as e:
            raise ValueError(str(e)) from None
        return self

    @property
    def trial_epochs(self) -> int:
        """Epochs of a full search trial: tune.scheduler.max_epochs, else train.epochs."""
        return (self.tune and self.tune.scheduler.max_epochs) or self.train.epochs

    @model_validator(mode="after")
    def _scheduler_fits_the_trials(self):
        if self.tune is None:
            return self
        s, epochs = self.tune.scheduler, self.trial_epochs
        source = "tune.scheduler.max_epochs" if s.max_epochs else "train.epochs"
        if s.name == "asha" and s.grace_period > epochs:
            raise ValueError(f"tune.scheduler.grace_period ({s.grace_period}) is longer than a trial ({source} "
                             f"{epochs}): lower the grace period or lengthen the trials")
        if s.name == "pbt" and s.perturbation_interval >= epochs:
            raise ValueError(f"tune.scheduler.perturbation_interval ({s.perturbation_interval}) leaves no step before a "
                             f"trial ends ({source} {epochs}), so PBT would never exploit or explore: lower it or "
                             "lengthen the trials")
        return self

    @model_validator(mode="after")
    def _space_fits_the_config(self):
        """Every searched field exists and accepts the values the search can give it."""
        if self.tune is None:
            return self
        base = {k: v for k, v in self.to_dict().items() if k != "tune"}
        fixed = _set_once_per_search(base)
        for key in self.tune.space:
            if key.split(".")[0] in ("tune", "storage", "name", "registry", "tracking", "serve") or key == "train.run_name":
                raise ValueError(f"tune.space[{key!r}]: names, storage and the search itself cannot be searched")
            section, _, field = key.rpartition(".")
            searched_kind = f"{section}.name" if field != "name" and f"{section}.name" in self.tune.space else None
            for kind in self.tune.candidate_values(searched_kind) if searched_kind else [None]:
                start = with_searched_values(base, {searched_kind: kind}) if searched_kind else base
                if searched_kind and field not in start[section]:  # model.hidden_size where model.name may be mlp
                    raise ValueError(f"tune.space[{key!r}]: {section} {kind!r}, a choice of tune.space[{searched_kind!r}], "
                                     f"has no {field!r}: search the whole section instead, as {section}: {{choice: "
                                     f"[{{name: {kind}, ...}}, ...]}}")
                self._check_values(key, start, fixed)
        return self

    def _check_values(self, key: str, base: dict, fixed: dict) -> None:
        """Every value the search can give `key` makes a valid trial config that leaves `fixed` as it is."""
        for value in self.tune.candidate_values(key):
            try:
                trial = config_from_dict(with_searched_values(base, {key: value}), source=f"tune.space[{key!r}]")
            except ConfigError as e:
                raise ValueError(str(e)) from None
            if changed := [k for k, v in _set_once_per_search(trial.to_dict()).items() if v != fixed[k]]:
                raise ValueError(f"tune.space[{key!r}]: a search sets {changed[0]} once for all its trials: "
                                 f"{SET_ONCE_PER_SEARCH[changed[0]]}")

    def to_dict(self) -> dict:
        return self.model_dump(mode="json")

    def hash(self) -> str:
        """sha256 of the resolved config, stable across key order."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()


# ---- serving ----------------------------------------------------------------------------


REGISTRY_DEFAULT = "runs/registry"  # the default storage.path's registry
SERVE_DEPLOYMENT = "Model"  # the endpoint's deployment, by the name Serve configs give it


class AutoscalingArgs(Section):
    min_replicas: int = Field(1, ge=0, description="Replicas kept running with no traffic (0 scales to zero).")
    max_replicas: int = Field(2, ge=1, description="Most replicas under load.")
    target_ongoing_requests: float = Field(
        4, gt=0, description="Requests in flight per replica the autoscaler aims for; more -> add replicas."
    )
    upscale_delay_s: float = Field(10, ge=0, description="Load must stay above target this long before scaling up.")
    downscale_delay_s: float = Field(60, ge=0, description="Load must stay below target this long before scaling down.")
    metrics_interval_s: float = Field(2, gt=0, description="How often replicas report their load.")
    look_back_period_s: float = Field(10, gt=0, description="Window the load is averaged over.")

    @model_validator(mode="after")
    def _bounds(self):
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) exceeds max_replicas ({self.max_replicas})")
        return self


class ServeArgs(Section):
    """Arguments of the Serve app builder (orchestrator.serve:build_app), as in deploy/serve.yaml."""

    checkpoint: str = Field(
        description="What to serve: a checkpoint (local directory or s3:// URI) or a registry version, "
        "models:/NAME@ALIAS or models:/NAME/VERSION."
    )
    registry: str | None = Field(None, description=f"Registry that models:/ references name; default {REGISTRY_DEFAULT}.")
    model_ref: str | None = Field(
        None, description="Set when deployed from models:/...: the reference, followed when its alias moves."
    )
    registered: dict[str, Any] | None = Field(
        None, description="Set when deployed from models:/...: the registry version served (GET /v1/model)."
    )
    storage_endpoint_url: str | None = Field(None, description="S3-compatible endpoint for an s3:// checkpoint.")
    max_instances: int = Field(256, ge=1, description="Most inputs in one request (422 over it).")
    max_body_bytes: int = Field(4 * 2**20, ge=1024, description="Largest request body in bytes (413 over it).")
    max_new_tokens: int = Field(512, ge=1, description="Most bytes one /v1/generate request may ask for (language models).")
    max_batch_size: int = Field(32, ge=1, description="Requests merged into one forward pass; 1 turns batching off.")
    batch_wait_timeout_s: float = Field(0.005, ge=0, description="How long a batch waits to fill, seconds.")
    max_ongoing_requests: int = Field(64, ge=1, description="Requests a replica works on at once; at least "
                                      "2 x max_batch_size, as a replica runs two batches at a time.")
    max_queued_requests: int = Field(
        256, ge=1, description="Requests waiting for a replica; beyond it -> 503 with Retry-After."
    )
    retry_after_s: float = Field(1, ge=0, description="Retry-After sent with a 503 when the queue is full.")
    autoscaling: AutoscalingArgs = Field(default_factory=AutoscalingArgs, description="Replica autoscaling.")
    num_cpus: float = Field(1, gt=0, description="CPUs per replica.")
    num_gpus: float = Field(0, ge=0, description="GPUs per replica; fractions share a GPU (e.g. 0.25).")
    auth: Literal["auto", "required", "none"] = Field(
        "auto",
        description="auto: API keys required when any are set, and always for clients beyond loopback; "
        "required: refuse to start without keys; none: no auth (only behind your own gateway).",
    )
    api_keys_env: str = Field(
        "ORCHESTRATOR_API_KEYS", description="Environment variable on the Ray nodes holding comma-separated API keys."
    )
    api_keys_file: str | None = Field(None, description="File on the Ray nodes with one API key per line.")
    health_check_period_s: float = Field(10, gt=0, description="How often Serve runs the replica health check.")
    max_surge_percent: int = Field(
        25, ge=0, le=100, description="Extra replicas a restart (a resource change) may start, as a percent of the "
        "replicas, rounded up: new replicas serve before old ones stop. 0 stops old ones first (no spare capacity "
        "needed, but with one replica requests wait or fail until the new one is up)."
    )
    graceful_shutdown_timeout_s: float = Field(
        20, gt=0, description="How long a stopping replica (rolling update, downscale) lets its requests finish "
        "before it is killed, seconds: above your slowest request (long /v1/generate calls)."
    )
    graceful_shutdown_wait_loop_s: float = Field(
        2, gt=0, description="How often a stopping replica checks for requests still running, seconds; also the "
        "least time it stays up after it leaves the routing table, while proxies learn it is going."
    )
    cors_origins: list[str] = Field(
        [], description='Web origins whose pages may call the endpoint from a browser (CORS), e.g. '
        '["https://app.example.com"]; "*" lets any. Empty: browsers refuse calls from other origins. API keys still apply.'
    )
    previous_checkpoints: list[str] = Field(
        [], description="Checkpoints served before, newest first: what `orchestrator serve rollback` returns to."
    )

    @model_validator(mode="after")
    def _check_origins(self):
        for origin in self.cors_origins:  # a browser sends its page's origin exactly so: no path, no slash
            if origin != "*" and not re.fullmatch(r"https?://[^/\s]+", origin):
                raise ValueError(f"cors_origins: {origin!r} is not an origin; give scheme://host[:port] with no path "
                                 '(e.g. https://app.example.com), or "*" for any')
        return self


# ---- loading ----------------------------------------------------------------------------


class DuplicateKey(yaml.constructor.ConstructorError):
    pass


class ConfigLoader(yaml.SafeLoader):
    """YAML as experiment files are written: `lr: 1e-3` is a number. PyYAML follows YAML 1.1, where a float
    needs a dot (1.0e-3) and 1e-3 is text; YAML 1.2, and OmegaConf and Hydra, read it as a float. A key
    written twice in one mapping is refused, as YAML says: PyYAML keeps the last silently, and a second
    `optim:` section would drop every setting of the first."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults`: its keys may be overridden
                continue
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, collections.abc.Hashable) and key in seen:
                raise DuplicateKey(
                    None, None, f"{key!r} is set twice in one mapping (first on line {seen[key].line + 1}): "
                    "keep one", key_node.start_mark)
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep)


ConfigLoader.add_implicit_resolver(  # YAML 1.2's floats, tried after 1.1's ints and floats
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def load_yaml(text: str):
    return yaml.load(text, Loader=ConfigLoader)  # noqa: S506 (a SafeLoader)


def read_yaml(path: str | os.PathLike, what: str, expected: str, load=load_yaml) -> tuple[dict, str]:
    """A YAML file that must hold a mapping: (the mapping, the text); ConfigError that says why not."""
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise ConfigError(f"cannot read {what} {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        data = ", or the data to train on (a table file, a folder of images or texts)" if what == "config" else ""
        raise ConfigError(f"{path} is binary, not a YAML {what}: give a YAML file that holds {expected}{data}") from None
    try:
        raw = load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {_yaml_problem(e)}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold {expected}")
    return raw, text


def _yaml_problem(e: yaml.YAMLError) -> str:
    """PyYAML's error on one line: where, and what."""
    mark, problem = getattr(e, "problem_mark", None), getattr(e, "problem", None)
    if mark is None or problem is None:
        return " ".join(str(e).split())
    where = f"line {mark.line + 1}, column {mark.column + 1}"
    context = getattr(e, "context", None)
    hint = " (indent with spaces: YAML takes no tabs)" if "\\t" in problem else ""
    return f"{where}: {problem}{hint}" + (f", {context}" if context else "")


def load_config(path: str | os.PathLike, overrides: list[str] = ()) -> ExperimentConfig:
    """Read a YAML experiment file, apply `a.b=value` overrides, validate. Given data instead (a table file, a
    folder of images, ...: not a .yaml file), the starter config for it (`starter_config`), with the overrides."""
    from orchestrator.starter import starter_config  # it reads the data, whose modules read the config

    if (raw := starter_config(str(path), overrides)) is not None:
        return config_from_dict(raw, source=f"{path} (data: the starter config)")
    path = Path(path)
    raw, _ = read_yaml(path, "config", "a mapping of sections (data, model, optim, train, ...)")
    raw.setdefault("name", path.stem)
    return config_from_dict(apply_overrides(raw, overrides), source=str(path))


def config_from_dict(raw: dict, source: str | None = None) -> ExperimentConfig:
    return parse(ExperimentConfig, raw, source)


def parse(cls: type[Section], raw: dict, source: str | None = None):
    """Validate raw into cls; ConfigError that names each bad field (and the nearest valid key)."""
    try:
        return cls.model_validate(raw)
    except ValidationError as e:
        reasons = "; ".join(explain(err, cls) for err in e.errors())
        raise ConfigError(f"{source}: {reasons}" if source else reasons) from None


def with_value(raw: dict, key: str, value) -> dict:
    """A deep copy of raw with the dotted key set to value (intermediate sections created)."""
    raw = json.loads(json.dumps(raw))  # deep copy; the config holds only JSON types
    node = raw
    *parents, leaf = key.split(".")
    for part in parents:
        child = node.setdefault(part, {})
        if isinstance(child, str):  # `model: cnn`, a section given by its name (Section._named_by_a_word)
            child = node[part] = {"name": child}
        if not isinstance(child, dict):
            raise ConfigError(f"{key!r}: {part!r} is a value, not a section")
        node = child
    node[leaf] = value
    return raw


def with_searched_values(raw: dict, values: dict) -> dict:
    """A deep copy of raw with a search's values (dotted keys) set. Searching a section's kind
    (model.name: {choice: [mlp, cnn]}) keeps of that section only the fields the chosen kind has: the
    others belong to the kind the YAML names (mlp's hidden_sizes under cnn), so each candidate trains
    with its own defaults. Kinds go first, so that the fields searched with them stay."""
    for key, value in sorted(values.items(), key=lambda kv: not kv[0].endswith(".name")):
        raw = with_value(raw, key, value)
        section, _, leaf = key.rpartition(".")
        field = ExperimentConfig.model_fields.get(section) if leaf == "name" else None
        kinds = (tagged_union_members(field.annotation) if field else None) or {}
        if isinstance(value, str) and value in kinds:
            raw[section] = {k: v for k, v in raw[section].items() if k in kinds[value].model_fields}
    return raw


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Set dotted keys, e.g. `train.num_workers=4`; values are parsed as YAML (`[64, 32]`, `true`)."""
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like section.field=value")
        try:
            parsed = load_yaml(value)
        except DuplicateKey as e:
            raise ConfigError(f"override {item!r}: {e.problem}") from None
        except yaml.YAMLError:  # text that is not YAML: the value as written (a run name, say)
            parsed = value
        raw = with_value(raw, key, parsed)
    return raw


def save_config(cfg: ExperimentConfig) -> str:
    """The resolved config as YAML text (what every run and checkpoint stores)."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
