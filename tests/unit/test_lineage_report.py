"""Lineage measured from this checkout, and the run report: an HTML page whose images exist."""

import json
import re
import subprocess
from pathlib import Path

from orchestrator import lineage, report
from orchestrator.checkpoint import read_checkpoint
from orchestrator.config import StorageConfig
from tests.unit.test_registry import CFG, checkpoint

ROOT = Path(__file__).parents[2]


def test_code_version_is_this_checkouts_commit_with_its_dirty_flag():
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True).stdout.strip())
    code = lineage.code_version()
    assert code["git_commit"] == head and code["git_dirty"] == dirty
    assert code["code_version"] == f"git:{head[:12]}" + ("-dirty" if dirty else "")


def test_a_shipped_job_keeps_the_laptops_code_version(monkeypatch):
    shipped = {"code_version": "git:0123456789ab", "git_commit": "0123456789ab" * 3, "git_dirty": False,
               "package_version": "0.1.0"}
    monkeypatch.setenv(lineage.CODE_VERSION_ENV, json.dumps(shipped))
    assert lineage.code_version() == shipped


def test_the_stamp_names_config_data_run_and_epoch():
    base = lineage.collect(CFG, "f" * 64)
    stamped = lineage.stamp(base, CFG, "run-1", "trial_7", 3)
    assert stamped["config_hash"] == CFG.hash() and stamped["data_fingerprint"] == "f" * 64
    assert stamped["data_uri"] == "sklearn:load_digits" and stamped["run"] == "run-1" and stamped["epoch"] == 3
    assert set(stamped["versions"]) == {"python", "torch", "ray", "orchestrator"}


def test_the_report_is_html_whose_images_exist(tmp_path):
    ckpt = read_checkpoint(checkpoint(tmp_path / "ckpt", 1))
    history = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1.2 / e, "val_accuracy": 1 - 0.5 / e,
                "val_f1": 1 - 0.6 / e} for e in range(1, 6)]
    search_plot = tmp_path / "trials.png"
    search_plot.write_bytes(b"\x89PNG fake")
    importance = [{"column": "age", "accuracy_drop": 0.2, "std": 0.01}, {"column": "city", "accuracy_drop": 0.0,
                                                                         "std": 0.0}]
    uri = report.run_report(str(tmp_path / "run"), ckpt, {"test_accuracy": 0.9}, [[9, 1], [2, 8]], StorageConfig(),
                            history=history, search={"experiment": "s", "plots": [str(search_plot)], "num_trials": 4},
                            importance=importance, baseline={"answer": "a", "share": 0.55, "accuracy": 0.5,
                                                             "balanced": False})
    html = Path(uri).read_text()
    assert ("<p>Always answering &#x27;a&#x27;, the most common class in training (55% of its rows), scores accuracy "
            "0.5000.</p>") in html
    images = re.findall(r'<img src="([^"]+)"', html)
    assert len(images) == 5 and "search-trials.png" in images and "importance.png" in images
    for name in images:
        data = (Path(uri).parent / name).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 8
    # the per-class table: precision of class a = 9/11, recall of b = 8/10
    assert f"{9 / 11:.4f}" in html and f"{8 / 10:.4f}" in html and "num_trials" in html
    assert CFG.hash() in html  # the lineage section


def test_mlflow_gets_params_metrics_lineage_and_the_report(tmp_path, monkeypatch):
    import mlflow

    from orchestrator import tracking

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # a file store needs no server for the test
    cfg = CFG.model_copy(update={"tracking": CFG.tracking.model_copy(
        update={"mlflow": True, "mlflow_tracking_uri": f"file://{tmp_path}/mlruns"})})
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "index.html").write_text("<html></html>")
    run_id = tracking.log_mlflow(cfg, "run-1", {"test_accuracy": 0.93}, {"config_hash": "abc", "versions": {}},
                                 str(tmp_path / "report"))
    run = mlflow.MlflowClient(f"file://{tmp_path}/mlruns").get_run(run_id)
    assert run.data.metrics == {"test_accuracy": 0.93} and run.data.params["model.name"] == "mlp"
    assert run.data.tags["lineage.config_hash"] == "abc"
    assert [a.path for a in mlflow.MlflowClient(f"file://{tmp_path}/mlruns").list_artifacts(run_id, "report")] == \
        ["report/index.html"]


def test_asking_for_mlflow_without_it_installed_stops_before_anything_starts(monkeypatch):
    import sys

    import pytest

    from orchestrator import tracking
    from orchestrator.errors import ConfigError

    monkeypatch.setitem(sys.modules, "mlflow", None)  # what `import mlflow` meets when it is not installed
    cfg = CFG.model_copy(update={"tracking": CFG.tracking.model_copy(update={"mlflow": True})})
    with pytest.raises(ConfigError, match="pip install mlflow"):
        tracking.check_mlflow(cfg)


def test_column_importance_is_the_accuracy_lost_when_a_columns_cells_are_shuffled():
    import numpy as np
    import torch

    from orchestrator.evaluate import column_importance

    class ReadsSize(torch.nn.Module):  # the class is the sign of the first feature; nothing else is read
        def forward(self, x):
            return torch.stack([-x[:, 0], x[:, 0]], dim=1)

    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 4)).astype(np.float32)
    x[::7, 3] = np.nan  # a blank cell of a column the model does not read moves as a blank
    y = (x[:, 0] > 0).astype(np.int64)
    features = [("size", "size"), ("city", "city=a"), ("city", "city=b"), ("age", "age")]
    importance = column_importance(ReadsSize(), x, y, features, num_classes=2, batch_size=64)
    assert [r["column"] for r in importance][0] == "size" and importance[0]["accuracy_drop"] > 0.3
    assert {r["column"]: r["accuracy_drop"] for r in importance[1:]} == {"city": 0.0, "age": 0.0}
    assert report.relied_on(importance, most=2) == ("columns relied on most (test accuracy lost without each): "
                                                    f"size {importance[0]['accuracy_drop']:+.3f}, "
                                                    f"{importance[1]['column']} +0.000")
    assert report.relied_on(None) == ""  # a model of images or text: no columns
    # at most max_rows rows, drawn at random: the same answer in less time
    fewer = column_importance(ReadsSize(), x, y, features, num_classes=2, batch_size=64, max_rows=200)
    assert abs(fewer[0]["accuracy_drop"] - importance[0]["accuracy_drop"]) < 0.1


def test_a_classifier_is_set_beside_always_answering_the_most_common_class(tmp_path, capsys):
    import numpy as np
    import pandas as pd
    import torch

    from orchestrator.checkpoint import write_checkpoint
    from orchestrator.cli import main
    from orchestrator.config import config_from_dict
    from orchestrator.evaluate import baseline
    from orchestrator.models import build_model

    info = {"label_names": ["ok", "fraud"], "class_counts": [90, 10]}
    y = np.array([0] * 95 + [1] * 5)
    assert baseline(info, y, balanced=False) == {"answer": "ok", "share": 0.9, "accuracy": 0.95, "balanced": False}
    assert baseline({"label_names": ["a"], "class_counts": None}, y, False) is None  # a language model
    assert baseline({"label_names": ["a", "b"]}, y, False) is None  # a checkpoint from before class counts were kept
    line = "always answering 'ok', the most common class in training (90% of its rows), scores accuracy 0.9500"
    assert report.beside_baseline(0.97, baseline(info, y, False)) == line
    hint = "set train.class_weight: balanced, so that the rare ones count as much as the common one"
    warning = f"warning: {line}, and the model does no better; with classes this uneven, {hint}"
    assert report.beside_baseline(0.95, baseline(info, y, False)).startswith(warning)
    assert report.beside_baseline(0.90, baseline(info, y, True)) == line  # weighed classes trade accuracy for recall
    even = baseline({"label_names": ["a", "b"], "class_counts": [60, 40]}, y, False)
    assert report.beside_baseline(0.5, even).endswith("and the model does no better")  # no hint: classes not uneven
    assert report.beside_baseline(0.955, baseline(info, y, False)).startswith(f"warning: {line}, and the model does "
                                                                              "hardly better; with classes")
    assert report.beside_baseline(0.5, None) == ""

    # `orchestrator evaluate` on a model that always answers 'ok' says so, with the hint
    cfg = config_from_dict({"name": "t", "data": {"name": "files", "path": "train.csv", "label_column": "kind"},
                            "model": {"name": "mlp", "hidden_sizes": [4]}})
    model = build_model(cfg.model, [1], 2)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        list(model.parameters())[-1].copy_(torch.tensor([3.0, 0.0]))  # the output layer's bias: 'ok' always wins
    write_checkpoint(str(tmp_path / "ckpt"), model=model, config=cfg, metrics={},
                     model_info={"input_shape": [1], "label_names": ["ok", "fraud"], "feature_columns": ["amount"],
                                 "normalization": {}, "data_fingerprint": "x", "class_counts": [90, 10]})
    holdout = pd.DataFrame({"amount": np.arange(100.0), "kind": ["ok"] * 95 + ["fraud"] * 5})
    holdout.to_csv(tmp_path / "h.csv", index=False)
    assert main(["evaluate", str(tmp_path / "ckpt"), "--data", str(tmp_path / "h.csv")]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[-2].startswith("loss ") and "accuracy 0.9500" in printed[-2]
    assert printed[-1].startswith(warning)
