"""Ray Tune on the shared local cluster: a small real search, its outputs, the best checkpoint."""

import csv
import json
from pathlib import Path

import pytest
import yaml

from orchestrator.checkpoint import read_checkpoint
from orchestrator.config import config_from_dict
from orchestrator.evaluate import evaluate_checkpoint
from orchestrator.tune import tune
from tests.conftest import ROOT

pytestmark = pytest.mark.ray


def digits_search(tmp_path, epochs: int, hidden_sizes: list[int]) -> dict:
    """jobs/digits-tune.yaml made small: an MLP for `epochs` epochs, stored under tmp_path."""
    raw = yaml.safe_load((ROOT / "jobs" / "digits-tune.yaml").read_text())
    raw["model"] = {"name": "mlp", "hidden_sizes": hidden_sizes}
    raw["train"]["epochs"] = epochs
    raw["storage"]["path"] = str(tmp_path)
    return raw


def test_small_asha_search_exports_the_best_trial(ray_cluster, tmp_path):
    raw = digits_search(tmp_path, epochs=4, hidden_sizes=[64])
    raw["tune"].update(num_samples=4, space={"optim.lr": {"loguniform": [1e-4, 3e-2]},
                                             "model.hidden_sizes": {"choice": [[32], [64, 32]]}})
    raw["tune"]["scheduler"].update(grace_period=1, reduction_factor=2)
    cfg = config_from_dict(raw)
    result = tune(cfg)
    print(json.dumps(result.to_dict(), default=str))
    assert result.num_trials == 4 and 1 <= result.num_stopped_early <= 3  # ASHA halves at epochs 1 and 2
    rows = list(csv.DictReader(Path(result.results_path).read_text().splitlines()))
    assert len(rows) == 4 and {"optim.lr", "model.hidden_sizes", "best_val_accuracy", "epochs", "stopped_early"} <= set(rows[0])
    assert sum(r["stopped_early"] == "True" for r in rows) == result.num_stopped_early
    for png in result.plots:
        assert Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ckpt = read_checkpoint(result.best_checkpoint)
    assert ckpt.config.model.hidden_sizes == result.best_config["model.hidden_sizes"]
    assert ckpt.config.optim.lr == result.best_config["optim.lr"] and ckpt.config.tune is None
    best_in_table = max(float(r["best_val_accuracy"]) for r in rows)
    assert result.best_metrics["val_accuracy"] == pytest.approx(best_in_table)
    again = evaluate_checkpoint(result.best_checkpoint)
    assert again["metrics"]["test_accuracy"] == result.best_metrics["test_accuracy"]


def test_pbt_clones_and_mutates_trials_across_optimizers(ray_cluster, tmp_path):
    raw = digits_search(tmp_path, epochs=8, hidden_sizes=[32])
    # all 4 trials at once (half a CPU each, no cap on concurrency): PBT ranks only running trials against each
    # other, so the worst one is cloned from the best at a perturbation. Run 2 at a time, a pair of these
    # sub-second trials could finish before the other was ranked; 8 epochs outlast uneven trial start-ups
    raw["tune"].update(num_samples=4, cpus_per_trial=0.5, max_concurrent_trials=4,
                       scheduler={"name": "pbt", "perturbation_interval": 1},
                       space={"optim.lr": {"loguniform": [1e-4, 3e-2]}, "optim.name": {"choice": ["sgd", "adam"]},
                              "optim.momentum": {"uniform": [0.5, 0.95]}})
    result = tune(config_from_dict(raw))
    # a clone restores another trial's checkpoint, perhaps under another optimizer: no trial fails
    assert result.num_trials == 4 and result.num_failed == 0
    assert list(Path(result.experiment_uri).glob("pbt_policy_*.txt"))  # some trial was exploited
    ckpt = read_checkpoint(result.best_checkpoint)  # the values the best checkpoint was trained with
    assert {k: v for k, v in ckpt.config.optim.model_dump().items() if f"optim.{k}" in result.best_config} == {
        k.removeprefix("optim."): v for k, v in result.best_config.items()}
    assert 0.5 <= result.best_config["optim.momentum"] <= 0.95 and 1e-4 <= result.best_config["optim.lr"] <= 3e-2


def test_a_time_budget_that_ends_the_search_is_reported_with_the_trial_it_cut(ray_cluster, tmp_path):
    raw = digits_search(tmp_path, epochs=400, hidden_sizes=[32])  # a trial would take minutes
    raw["tune"].update(num_samples=6, max_concurrent_trials=1, time_budget_s=15, scheduler={"name": "fifo"},
                       space={"optim.lr": {"loguniform": [1e-3, 1e-2]}})
    result = tune(config_from_dict(raw))
    # the first trial is cut short; the five never started are left out of the table
    assert result.time_budget_reached and result.num_out_of_time == 1 and result.num_trials == 1
    assert 1 <= result.best_metrics["epoch"] < 400


def test_multi_worker_trials_run_a_torch_trainer_each_and_fit_the_cpus_exactly(ray_cluster, tmp_path):
    raw = digits_search(tmp_path, epochs=2, hidden_sizes=[32])
    raw["train"]["num_workers"] = 2  # 2 workers of 1 CPU: every CPU of this 2-CPU cluster
    raw["tune"].update(num_samples=1, max_concurrent_trials=1, cpus_per_trial=1, time_budget_s=180,
                       space={"optim.lr": {"loguniform": [1e-3, 1e-2]}})
    result = tune(config_from_dict(raw))
    assert result.num_trials == 1 and result.num_failed == 0 and result.best_metrics["epoch"] >= 1
    assert not result.time_budget_reached and result.num_out_of_time == 0  # 180 s is far more than it takes
    assert read_checkpoint(result.best_checkpoint).config.train.num_workers == 2
    again = evaluate_checkpoint(result.best_checkpoint)
    assert again["metrics"]["test_accuracy"] == result.best_metrics["test_accuracy"]


def test_hyperband_pauses_trials_at_its_rungs_and_stops_the_worse_ones(ray_cluster, tmp_path):
    raw = digits_search(tmp_path, epochs=3, hidden_sizes=[32])
    del raw["tune"]["max_concurrent_trials"]  # trials run as the CPUs allow; HyperBand needs whole brackets
    # max 3 epochs, reduction 3: a bracket of 2 trials that run 3 epochs, and one of 3 that keeps 1 after epoch 1
    raw["tune"].update(num_samples=5, scheduler={"name": "hyperband", "reduction_factor": 3},
                       space={"optim.lr": {"loguniform": [1e-4, 3e-2]}})
    result = tune(config_from_dict(raw))
    rows = list(csv.DictReader(Path(result.results_path).read_text().splitlines()))
    assert result.num_trials == 5 and result.num_failed == 0 and result.num_stopped_early == 2
    assert sorted(int(r["epochs"]) for r in rows) == [1, 1, 3, 3, 3]  # the paused survivor resumed to the end
