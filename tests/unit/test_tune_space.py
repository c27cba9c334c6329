import json

import pytest

from orchestrator.config import ConfigError, config_from_dict
from orchestrator.tune import decode, param_space, trial_config

BASE = {"name": "t", "data": {"name": "digits"}, "model": {"name": "cnn"}, "train": {"epochs": 7}}


def cfg_with(space, **tune):
    return config_from_dict({**BASE, "tune": {"space": space, **tune}})


def test_domains_and_list_choices_as_their_json_text():
    cfg = cfg_with({"optim.lr": {"loguniform": [1e-4, 1e-1]}, "model.channels": {"choice": [[8], [8, 16]]},
                    "optim.name": {"choice": ["sgd", "adam"]}, "model.hidden_size": {"randint": [16, 64]}})
    space = param_space(cfg)
    assert space["model.channels"].categories == ["[8]", "[8, 16]"]  # lists go to the searcher (and its tables) as text
    assert space["optim.name"].categories == ["sgd", "adam"]
    assert (space["model.hidden_size"].lower, space["model.hidden_size"].upper) == (16, 65)  # inclusive high
    params = {"optim.lr": 0.01, "model.channels": "[8, 16]", "optim.name": "adam", "model.hidden_size": 40}
    assert decode(cfg.to_dict(), params)["model.channels"] == [8, 16]
    trial = trial_config(cfg.to_dict(), params)
    assert trial.model.channels == [8, 16] and trial.optim.lr == 0.01 and trial.tune is None
    assert trial.train.epochs == 7  # a full trial is train.epochs unless scheduler.max_epochs says otherwise


def test_a_searched_model_family_trains_with_its_own_fields_and_keeps_the_shared_ones():
    # the YAML's model is a cnn with its own channels; an mlp trial drops them and takes mlp's defaults
    cfg = config_from_dict({**BASE, "model": {"name": "cnn", "channels": [4, 8], "dropout": 0.3},
                            "tune": {"space": {"model.dropout": {"uniform": [0, 0.5]},
                                               "model.name": {"choice": ["cnn", "mlp"]}}}})
    mlp = trial_config(cfg.to_dict(), {"model.dropout": 0.25, "model.name": "mlp"})  # the kind after the field
    assert mlp.model.name == "mlp" and mlp.model.dropout == 0.25 and not hasattr(mlp.model, "channels")
    cnn = trial_config(cfg.to_dict(), {"model.dropout": 0.25, "model.name": "cnn"})
    assert cnn.model.channels == [4, 8] and cnn.model.dropout == 0.25
    # and so does the final training of `orchestrator run`, from the best trial's values
    from orchestrator.pipeline import final_config

    final = final_config(cfg, {"model.dropout": 0.25, "model.name": "mlp"})
    assert final.model == mlp.model and final.tune is None


def test_a_trial_uses_as_many_threads_as_the_cpus_it_holds():
    cfg = cfg_with({"optim.lr": {"uniform": [0.1, 0.2]}}, cpus_per_trial=3)
    assert trial_config(cfg.to_dict(), {"optim.lr": 0.15}).train.cpus_per_worker == 3


def test_scheduler_max_epochs_sets_the_trial_length():
    cfg = cfg_with({"optim.lr": {"uniform": [0.1, 0.2]}}, scheduler={"max_epochs": 3})
    assert trial_config(cfg.to_dict(), {"optim.lr": 0.15}).train.epochs == 3


@pytest.mark.parametrize(
    "space, message",
    [
        ({"optim.lrr": {"uniform": [0.1, 0.2]}}, "tune.space['optim.lrr']: unknown key 'optim.lrr'; did you mean 'lr'?"),
        ({"optim.lr": {"uniform": [0.2, 0.1]}}, "low (0.2) must be below high (0.1)"),
        ({"optim.lr": {"loguniform": [0, 0.1]}}, "loguniform needs low > 0"),
        ({"optim.name": {"choice": []}}, "choice must be a non-empty list"),
        ({"optim.name": {"choice": ["sgd", "lion"]}}, "optim.name: Input should be"),
        ({"model.dropout": {"normal": [0, 1]}}, "must be one of {kind: values}"),
        ({"model.hidden_size": {"randint": [1.5, 4]}}, "randint needs integer bounds"),
        ({"storage.path": {"choice": ["a"]}}, "cannot be searched"),
        # the data is split once for all trials: a trial's seed or split would be a label, not what it trained on
        ({"seed": {"randint": [0, 3]}}, "tune.space['seed']: a search sets seed once for all its trials: it splits the "
                                        "data once, by seed"),
        ({"data.val_fraction": {"uniform": [0.1, 0.3]}}, "tune.space['data.val_fraction']: a search sets data once"),
        ({"data": {"choice": [{"name": "digits"}, {"name": "digits", "test_fraction": 0.2}]}}, "sets data once"),
        ({"train.num_workers": {"choice": [1, 2]}}, "sets train.num_workers once for all its trials: each trial's "
                                                    "processes and resources come from"),
        ({"model.name": {"choice": ["mlp", "cnn"]}, "model.channels": {"choice": [[8]]}},
         "tune.space['model.channels']: model 'mlp', a choice of tune.space['model.name'], has no 'channels': search "
         "the whole section instead"),
    ],
)
def test_bad_spaces_name_the_field(space, message):
    with pytest.raises(ConfigError) as e:
        cfg_with(space)
    assert message in str(e.value)


def test_training_time_augmentation_and_whole_model_sections_can_be_searched():
    cfg_with({"data.augment.enabled": {"choice": [True, False]}})
    cfg_with({"model": {"choice": [{"name": "mlp", "hidden_sizes": [16]}, {"name": "cnn", "channels": [4, 8]}]}})


def test_requested_trials_count_the_whole_grid_per_sample():
    assert cfg_with({"optim.lr": {"uniform": [0.1, 0.2]}}, num_samples=5).tune.requested_trials == 5
    grid = {"optim.name": {"grid": ["sgd", "adam"]}, "model.hidden_size": {"grid": [8, 16, 32]}}
    assert cfg_with(grid, num_samples=2, search={"name": "grid"}).tune.requested_trials == 12


def test_grid_search_needs_grid_dimensions():
    with pytest.raises(ConfigError, match="grid needs every space entry"):
        cfg_with({"optim.lr": {"uniform": [0.1, 0.2]}}, search={"name": "grid"})


def test_optuna_refuses_grid_dimensions_before_ray_starts():
    with pytest.raises(ConfigError, match=r"optuna picks every value itself and takes no grid: make \['optim.name'\]"):
        cfg_with({"optim.lr": {"uniform": [0.1, 0.2]}, "optim.name": {"grid": ["sgd", "adam"]}}, search={"name": "optuna"})


def test_pbt_refuses_fields_it_cannot_change_mid_trial_before_ray_starts():
    with pytest.raises(ConfigError, match=r"pbt changes values mid-trial: search only optim\.\* fields, not \['model.dropout'\]"):
        cfg_with({"optim.lr": {"uniform": [0.1, 0.2]}, "model.dropout": {"uniform": [0, 0.5]}}, scheduler={"name": "pbt"})


def test_hyperband_refuses_a_concurrency_cap_that_would_keep_its_brackets_from_filling():
    with pytest.raises(ConfigError, match="leave max_concurrent_trials out"):
        cfg_with({"optim.lr": {"uniform": [0.1, 0.2]}}, scheduler={"name": "hyperband"}, max_concurrent_trials=2)


@pytest.mark.parametrize("scheduler, message", [
    ({"grace_period": 8}, r"grace_period \(8\) is longer than a trial \(train.epochs 7\)"),
    ({"grace_period": 3, "max_epochs": 2}, r"grace_period \(3\) is longer than a trial \(tune.scheduler.max_epochs 2\)"),
    ({"name": "pbt", "perturbation_interval": 7}, r"perturbation_interval \(7\) leaves no step before a trial ends"),
])
def test_a_scheduler_that_cannot_act_within_a_trial_is_refused_before_ray_starts(scheduler, message):
    with pytest.raises(ConfigError, match=message):  # Ray's own check is an assert, a traceback in the search
        cfg_with({"optim.lr": {"uniform": [0.1, 0.2]}}, scheduler=scheduler)
    cfg_with({"optim.lr": {"uniform": [0.1, 0.2]}}, scheduler={**scheduler, "max_epochs": 9})  # long enough trials


def test_concurrency_limit_reaches_the_search():
    from orchestrator.tune import _search

    # Tune ignores TuneConfig.max_concurrent_trials for the random/grid generator: it must carry the limit
    assert _search(cfg_with({"optim.lr": {"uniform": [0.1, 0.2]}}, max_concurrent_trials=1)).max_concurrent == 1
    assert _search(cfg_with({"optim.lr": {"uniform": [0.1, 0.2]}})).max_concurrent == 0  # unlimited: as many as fit


def test_pbt_moves_choices_to_neighbours_and_keeps_numbers_in_their_range():
    from orchestrator.tune import _scheduler

    cfg = cfg_with({"optim.name": {"choice": ["sgd", "rmsprop"]}, "optim.momentum": {"uniform": [0.5, 0.95]},
                    "optim.lr": {"loguniform": [1e-3, 1e-1]}}, scheduler={"name": "pbt"})
    pbt = _scheduler(cfg)
    assert pbt._hyperparam_mutations["optim.name"] == ["sgd", "rmsprop"]  # a list: shifted, never multiplied
    explored = pbt._custom_explore_fn({"optim.name": "sgd", "optim.momentum": 0.95 * 1.2, "optim.lr": 1e-3 * 0.8})
    assert explored == {"optim.name": "sgd", "optim.momentum": 0.95, "optim.lr": 1e-3}


def test_a_time_budget_cut_is_told_from_an_early_stop_by_the_epochs_the_scheduler_stops_at():
    from types import SimpleNamespace

    import pandas as pd

    from orchestrator.tune import _stopping_epochs, _trial_table

    asha = cfg_with({"optim.lr": {"uniform": [0.1, 0.2]}}, scheduler={"name": "asha", "grace_period": 1,
                                                                         "reduction_factor": 3, "max_epochs": 27},
                    time_budget_s=60)
    assert _stopping_epochs(asha.tune.scheduler, 27) == {1, 3, 9}
    assert _stopping_epochs(cfg_with({"optim.lr": {"uniform": [0.1, 0.2]}}, scheduler={"name": "fifo"}).tune.scheduler,
                            7) == set()
    halves = cfg_with({"optim.lr": {"uniform": [0.1, 0.2]}}, scheduler={"grace_period": 2, "reduction_factor": 2.5})
    assert _stopping_epochs(halves.tune.scheduler, 7) == {2, 5}  # rungs at 2 and 5; the next, 12.5, is past train.epochs 7

    def trial(i, epochs):  # what a Tune Result holds, for the table
        history = pd.DataFrame({"epoch": range(1, epochs + 1), "val_accuracy": [0.5] * epochs})
        return SimpleNamespace(metrics={"trial_id": f"t{i}", "epoch": epochs, "val_accuracy": 0.5}, error=None,
                               metrics_dataframe=history, config={"optim.lr": 0.15}, path=f"/x/t{i}")

    grid = [trial(0, 27), trial(1, 3), trial(2, 5)]  # all epochs; stopped at rung 3; cut after epoch 5
    rows, _ = _trial_table(asha, grid)
    assert [(r["status"], r["stopped_early"]) for r in rows] == [("done", False), ("done", True), ("out_of_time", False)]
    asha.tune.time_budget_s = None  # no budget: whatever ended a short trial, it was not the budget
    rows, _ = _trial_table(asha, grid)
    assert [r["status"] for r in rows] == ["done"] * 3 and [r["stopped_early"] for r in rows] == [False, True, True]

    # the trial's own early stopping: a trial whose val_accuracy has not improved for 2 epochs stopped itself
    raw = asha.to_dict()
    patient = config_from_dict({**raw, "train": {**raw["train"], "early_stopping_patience": 2},
                                "tune": {**raw["tune"], "time_budget_s": 60}})
    improving = trial(3, 5)
    improving.metrics_dataframe["val_accuracy"] = [0.1, 0.2, 0.3, 0.4, 0.5]
    unstarted = SimpleNamespace(metrics={}, error=None, metrics_dataframe=None, config={"optim.lr": 0.15}, path="/x/t4")
    rows, _ = _trial_table(patient, [trial(2, 5), improving, unstarted])  # left out: it trained nothing
    assert [(r["status"], r["stopped_early"]) for r in rows] == [("done", True), ("out_of_time", False)]


def test_a_trial_whose_results_tune_could_not_read_keeps_its_curve_from_its_latest_checkpoint(tmp_path):
    """Tune leaves a trial's metrics dataframe empty when it cannot read the trial's result file (it logs
    a warning): the table and plot then take the epoch history the trial saved with its checkpoint."""
    from types import SimpleNamespace

    import pandas as pd
    from ray.train import Checkpoint

    from orchestrator.tune import _trial_table

    cfg = cfg_with({"optim.lr": {"uniform": [0.1, 0.2]}}, scheduler={"name": "fifo"})
    saved = tmp_path / "checkpoint_000002"
    saved.mkdir()
    history = [{"epoch": 1, "val_accuracy": 0.6, "finished_at": 1.0}, {"epoch": 2, "val_accuracy": 0.8, "finished_at": 2.0}]
    (saved / "state.json").write_text(json.dumps({"epoch": 2, "history": history}))
    unread = SimpleNamespace(metrics={"trial_id": "t0", "epoch": 2, "val_accuracy": 0.8}, error=None,
                             metrics_dataframe=pd.DataFrame(), checkpoint=Checkpoint(str(saved)),
                             config={"optim.lr": 0.15}, path="/x/t0")
    no_checkpoint = SimpleNamespace(metrics={"trial_id": "t1", "epoch": 1, "val_accuracy": 0.5}, error=None,
                                    metrics_dataframe=pd.DataFrame(), checkpoint=None, config={"optim.lr": 0.12},
                                    path="/x/t1")
    rows, curves = _trial_table(cfg, [unread, no_checkpoint])
    assert curves == {"t0": [(1, 0.6), (2, 0.8)], "t1": []}
    assert [r["best_val_accuracy"] for r in rows] == [0.8, None]
    assert [r["epochs"] for r in rows] == [2, 1]

    import warnings

    from orchestrator import report

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib warns of a legend with nothing in it
        assert report._curves_png({"t1": []}, "val_accuracy").startswith(b"\x89PNG")
