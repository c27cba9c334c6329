"""The training loop without Ray: early stopping, through a Session that records what it is handed."""

import contextlib

import numpy as np
import pytest

from orchestrator import data
from orchestrator.config import config_from_dict
from orchestrator.loop import run, stalled
from orchestrator.tune import TuneSession


def epochs(*values, metric="val_accuracy"):
    return [{"epoch": i + 1, metric: v} for i, v in enumerate(values)]


@pytest.mark.parametrize("history, mode, patience, stops", [
    (epochs(0.5, 0.6, 0.6, 0.6), "max", 2, True),  # a tie is no improvement
    (epochs(0.5, 0.6, 0.6, 0.7), "max", 2, False),
    (epochs(0.5, 0.6, 0.59), "max", 2, False),  # only one epoch since the best
    (epochs(0.9, 0.8, 0.7), "min", 2, False),  # a loss still falling
    (epochs(0.7, 0.8, 0.9), "min", 2, True),
    (epochs(0.5, 0.4, 0.3, 0.2), "max", None, False),  # patience unset: every epoch runs
    ([], "max", 1, False),
])
def test_stalled_counts_epochs_since_the_best(history, mode, patience, stops):
    assert (stalled(history, "val_accuracy", mode, patience) is not None) == stops


class Recording(TuneSession):
    """TuneSession with no Tune around it: nothing to resume, reports kept here."""

    def __init__(self, arrays):
        super().__init__("unit", arrays, use_gpu=False)
        self.reports = []

    def resume_dir(self):
        return contextlib.nullcontext()

    def report(self, metrics, checkpoint_dir, dir_name):
        self.reports.append(metrics)


def run_on_synthetic_data(optim: dict, train: dict | None = None):
    """(config, Recording session) of 6 epochs of an MLP on 300 synthetic rows, without Ray."""
    cfg = config_from_dict({
        "name": "unit", "data": {"name": "synthetic", "num_samples": 300, "feature_shape": [4], "num_classes": 3},
        "model": {"name": "mlp", "hidden_sizes": [8]}, "optim": optim,
        "train": {"epochs": 6, "batch_size_per_worker": 32, **(train or {})},
    })
    arrays = data.load_arrays(cfg.data, cfg.seed)
    x, y = arrays.x.astype(np.float32), arrays.y
    mean, std = data.channel_stats(x)
    info = {"input_shape": [4], "input_dtype": "float32", "label_names": arrays.label_names, "feature_columns": None,
            "normalization": {"mean": mean.tolist(), "std": std.tolist()}, "data_fingerprint": "unit"}
    session = Recording({"train": (x[:200], y[:200]), "val": (x[200:], y[200:])})
    run(cfg, info, session, invocation="unit")
    return cfg, session


@pytest.mark.parametrize("lr, patience, ran", [(1e-12, 2, 3), (1e-12, None, 6)])
def test_a_run_whose_metric_stops_improving_ends_after_patience_epochs(lr, patience, ran, capsys):
    _, session = run_on_synthetic_data({"name": "sgd", "lr": lr, "schedule": "constant"},  # too small a step to
                                       {"early_stopping_patience": patience})  # change any prediction
    assert [m["epoch"] for m in session.reports] == list(range(1, ran + 1))
    if patience:
        assert "unit: stopping early: val_accuracy has not improved for 2 epochs (best" in capsys.readouterr().out


def test_a_run_whose_training_loss_is_no_longer_a_number_stops_there_and_no_such_epoch_is_kept(capsys):
    """As Keras' TerminateOnNaN: a learning rate warmed up to 1,000 makes the loss nan in epoch 3 of 6."""
    from types import SimpleNamespace

    import pyarrow.fs

    from orchestrator.train import _best_checkpoint

    cfg, session = run_on_synthetic_data({"name": "sgd", "lr": 1e3, "schedule": "constant", "warmup_epochs": 5})
    losses = [m["train_loss"] for m in session.reports]
    assert len(losses) < 6 and np.isfinite(losses[:-1]).all() and not np.isfinite(losses[-1])
    assert (f"unit: stopped in epoch {len(losses)}: the training loss is nan: the model diverged; lower optim.lr "
            "(1000), or clip the gradients (optim.grad_clip_norm: 1.0)") in capsys.readouterr().out
    # the run keeps the best epoch whose model is numbers, though the diverged one's val_accuracy ranks higher
    checkpoint = lambda epoch: SimpleNamespace(filesystem=pyarrow.fs.LocalFileSystem(), path=f"/r/epoch-{epoch}")
    reported = [(checkpoint(e), {**m, "val_accuracy": 0.3 + 0.1 * e}) for e, m in enumerate(session.reports, 1)]
    kept, _ = _best_checkpoint(cfg, SimpleNamespace(best_checkpoints=reported, path="/r"))
    assert kept == f"/r/epoch-{len(losses) - 1}"
    with pytest.raises(RuntimeError, match=r"^no epoch left a model to keep: the training loss is nan: the model "
                                           r"diverged; lower optim.lr \(1000\)"):
        _best_checkpoint(cfg, SimpleNamespace(best_checkpoints=reported[-1:], path="/r"))


def test_balanced_class_weight_reaches_the_loss_from_the_training_split_counts():
    """train.class_weight: balanced, through the loop, on 1 rare row in 20: the rare class's recall rises."""
    rng = np.random.default_rng(0)
    y = (rng.random(1200) < 0.05).astype(np.int64)
    x = (rng.normal(size=(1200, 4)) + y[:, None] * np.array([1.5, 1.0, 0, 0])).astype(np.float32)
    info = {"input_shape": [4], "input_dtype": "float32", "label_names": ["ok", "rare"], "feature_columns": None,
            "class_counts": np.bincount(y[:900]).tolist(), "data_fingerprint": "unit",
            "normalization": {"mean": [0.0] * 4, "std": [1.0] * 4}}
    recalls = {}
    for weight in ("none", "balanced"):
        cfg = config_from_dict({
            "name": "rare", "data": {"name": "synthetic"}, "model": {"name": "mlp", "hidden_sizes": [16]},
            "optim": {"name": "adam", "lr": 0.01, "schedule": "constant"},
            "train": {"epochs": 4, "batch_size_per_worker": 64, "class_weight": weight}})
        session = Recording({"train": (x[:900], y[:900]), "val": (x[900:], y[900:])})
        run(cfg, info, session, invocation="unit")
        recalls[weight] = session.reports[-1]["val_recall"]  # the mean of the two classes' recalls
    assert recalls["balanced"] > recalls["none"] + 0.15, recalls  # here 0.70 against 0.50


def test_column_importance_is_for_tables_and_not_for_pixel_columns_made_images(tmp_path):
    """A CSV of pixel columns (Kaggle's digit recognizer) with data.feature_shape is read as images: shuffling a
    column of a [N, 1, 8, 8] array had failed after training, with a traceback, and no report."""
    import pandas as pd
    import torch

    from orchestrator.config import FilesData
    from orchestrator.models import build_model, describe
    from orchestrator.train import _column_importance

    rng = np.random.default_rng(0)
    table = pd.DataFrame(rng.normal(size=(60, 64)).round(3), columns=[f"pixel{i}" for i in range(64)])
    table.insert(0, "label", np.arange(60) % 2)
    table.to_csv(tmp_path / "px.csv", index=False)
    for shape, model_cfg, tabular in (([1, 8, 8], {"name": "cnn", "channels": [4], "hidden_size": 8}, False),
                                      (None, {"name": "mlp", "hidden_sizes": [8]}, True)):
        cfg = config_from_dict({"name": "px", "data": {"name": "files", "path": str(tmp_path / "px.csv"),
                                                        "label_column": "label", "feature_shape": shape},
                                "model": model_cfg})
        splits = data.load_splits(FilesData(**cfg.data.model_dump()), 0)
        model = build_model(cfg.model, list(splits.arrays["test"][0].shape[1:]), 2)
        with torch.no_grad():
            importance = _column_importance(model.eval(), splits, describe(cfg.model, splits.info()), 64)
        assert (importance is not None and len(importance) == 64) == tabular


def test_a_run_of_few_optimizer_steps_is_noted_with_the_batch_size_that_takes_more():
    """104 rows of iris in batches of 64, 20 epochs: 40 steps, test accuracy 0.83 (0.96 in batches of 8), and
    nothing said that the model had had too few steps to learn."""
    from orchestrator.train import few_steps

    def cfg(**train):
        return config_from_dict({"name": "t", "data": {"name": "digits"}, "model": {"name": "mlp"}, "train": train})

    assert few_steps(cfg(epochs=20), 104) == (
        "note: 40 optimizer steps in all (2 an epoch: 104 training rows in batches of 64, 20 epochs), which most "
        "models need more of to learn: smaller batches take more (train.batch_size_per_worker: 8, 13 an epoch), "
        "or more epochs (train.epochs)")
    assert few_steps(cfg(epochs=20), 1257) is None  # the digits: 20 steps an epoch, 400 in all
    assert few_steps(cfg(epochs=10, num_workers=2), 1257).startswith(  # two workers take a batch each a step
        "note: 100 optimizer steps in all (10 an epoch: 1,257 training rows in batches of 128, 10 epochs)")
    assert "batch_size_per_worker" not in few_steps(cfg(epochs=2, batch_size_per_worker=4), 40)  # small already
