"""Ray Tune adapter: a search over config fields, early stopping, resume, the best model out.

    orchestrator tune jobs/digits-tune.yaml [section.field=value ...] [--json]
    orchestrator tune jobs/digits-tune.yaml --resume      # continue the latest interrupted search

Single-worker trials run the training loop (loop.py) directly in the trial process: no Ray
Train start-up per trial (measured here: ~30 s with a TorchTrainer per trial, ~2 s without).
Trials with train.num_workers > 1 (clusters) launch a TorchTrainer each and report through
Ray Train's TuneReportCallback.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

from orchestrator import data, engine, lineage, loop, report, storage
from orchestrator.checkpoint import read_checkpoint
from orchestrator.config import ExperimentConfig, config_from_dict, with_searched_values, with_value
from orchestrator.errors import ConfigError
from orchestrator.models import describe, model_for
from orchestrator.runtime import check_fits

PRIMITIVE = (str, int, float, bool, type(None))


@dataclass
class TuneResult:
    experiment: str
    experiment_uri: str
    best_config: dict  # the searched fields of the best trial
    best_metrics: dict  # its validation metrics at the best epoch, plus test_* metrics
    best_checkpoint: str  # exported copy, in the project's checkpoint format
    best_trial: str
    num_trials: int
    num_stopped_early: int  # by the scheduler (or train.early_stopping_patience)
    num_failed: int  # trials that ended in an error (their error files are named in Tune's table above)
    time_budget_reached: bool  # tune.time_budget_s ended the search: trials left unstarted, or cut short
    num_out_of_time: int  # trials still running when the time budget ended them
    results_path: str  # CSV of every trial
    plots: list[str]
    duration_s: float

    def to_dict(self) -> dict:
        return asdict(self)

    def outcome(self) -> str:
        """'12 trials, 8 stopped early, 1 failed (...); tune.time_budget_s ended the search, 2 trials cut short'"""
        text = f"{self.num_trials} trials, {self.num_stopped_early} stopped early"
        if self.num_failed:
            text += f", {self.num_failed} failed (see the errors above)"
        if self.time_budget_reached:
            text += f"; tune.time_budget_s ended the search, {self.num_out_of_time} trials cut short"
        return text


def tune(cfg: ExperimentConfig, address: str | None = None, resume: bool = False,
         splits: data.Splits | None = None) -> TuneResult:
    """Run the search on Ray (embedded locally unless `address`); export and test the best model.
    `splits`: the data, if the caller loaded it already."""
    from orchestrator.evaluate import evaluate_model
    from orchestrator.runtime import ray_session

    if cfg.tune is None:
        raise ConfigError("the config has no tune section: add tune.space (see jobs/digits-tune.yaml)")
    started = time.time()
    st = cfg.storage
    storage.check_writable(st.path, st.endpoint_url, st.region, mark=True)
    name = _experiment_name(cfg, resume)
    experiment_uri = storage.join(st.path, name)
    # bad data, or a model that does not fit it, is refused before Ray starts (not by every trial)
    splits = splits or data.load_splits(cfg.data, cfg.seed, st.endpoint_url)
    model_for(cfg.model, splits.info())
    with ray_session(address):
        check_resources(cfg)
        grid = search(cfg, name, splits, resume)
        best = _best(cfg, grid)
        exported = _export(best["checkpoint"], storage.join(experiment_uri, "best"), st)
        ckpt = read_checkpoint(exported, st.endpoint_url)
        test = evaluate_model(ckpt.model(), *splits.arrays["test"], len(splits.label_names), cfg.train.eval_batch_size)
    rows, curves = _trial_table(cfg, grid)
    num_out_of_time = sum(r["status"] == "out_of_time" for r in rows)
    results_path, plots = report.tune_results(rows, curves, cfg.tune, experiment_uri, st)
    return TuneResult(
        experiment=name,
        experiment_uri=experiment_uri,
        best_config=_searched_values(cfg, ckpt.config),
        best_metrics={**best["metrics"], **{f"test_{k}": v for k, v in test.items()}},
        best_checkpoint=exported,
        best_trial=best["trial_id"],
        num_trials=len(rows),
        num_stopped_early=sum(r["stopped_early"] for r in rows),
        num_failed=sum(r["status"] == "error" for r in rows),
        # the budget cut trials short, or left some unstarted (the table leaves those out)
        time_budget_reached=cfg.tune.time_budget_s is not None and (num_out_of_time > 0 or
                                                                    len(rows) < cfg.tune.requested_trials),
        num_out_of_time=num_out_of_time,
        results_path=results_path,
        plots=plots,
        duration_s=round(time.time() - started, 1),
    )


def _experiment_name(cfg: ExperimentConfig, resume: bool) -> str:
    prefix = f"{cfg.name}-search-"
    if not resume:
        return prefix + time.strftime("%Y%m%d-%H%M%S")
    from pyarrow.fs import FileSelector

    fs, root = storage.filesystem(cfg.storage.path, cfg.storage.endpoint_url, cfg.storage.region)
    found = sorted(e.base_name for e in fs.get_file_info(FileSelector(root, allow_not_found=True))
                   if e.base_name.startswith(prefix))
    if not found:
        raise ConfigError(f"--resume: no search named {prefix}* under {cfg.storage.path}; run without --resume")
    return found[-1]


def search(cfg: ExperimentConfig, name: str, splits: data.Splits, resume: bool = False):
    """Run (or resume) the search on the connected Ray; the Tune ResultGrid."""
    from orchestrator.runtime import restore_sigint

    run_lineage = lineage.collect(cfg, splits.fingerprint, search=name)
    with restore_sigint():
        return _tuner(cfg, name, splits, splits.info(), run_lineage, resume).fit()


def check_resources(cfg: ExperimentConfig) -> None:
    """A trial that the embedded Ray can never fit is refused before the search waits forever."""
    t, workers = cfg.tune, cfg.train.num_workers
    need = {k: v * workers for k, v in {"CPU": t.cpus_per_trial, "GPU": t.gpus_per_trial}.items() if v}
    check_fits("each trial" + (f" of train.num_workers {workers}" if workers > 1 else ""), need,
               "lower tune.cpus_per_trial or tune.gpus_per_trial" + (" or train.num_workers" if workers > 1 else ""))


# ---- the search space -------------------------------------------------------------------


def param_space(cfg: ExperimentConfig) -> dict:
    """Tune domains for cfg.tune.space. Choices of lists/dicts are searched as their JSON text
    (Optuna accepts only plain values), which Tune's progress tables show as written, and decoded
    in the trial."""
    from ray import tune

    space = {}
    for key, dim in cfg.tune.space.items():
        kind, values = next(iter(dim.items()))
        if kind in ("choice", "grid"):
            options = values if all(isinstance(v, PRIMITIVE) for v in values) else [json.dumps(v) for v in values]
            space[key] = tune.choice(options) if kind == "choice" else tune.grid_search(options)
        else:
            low, high = values
            if kind == "randint":
                space[key] = tune.randint(low, high + 1)  # inclusive high, as written
            else:
                space[key] = (tune.uniform if kind == "uniform" else tune.loguniform)(low, high)
    return space


def decode(cfg_dict: dict, params: dict) -> dict:
    """The searched values as they go into the config (JSON text back to the listed choices)."""
    out = {}
    for key, value in params.items():
        kind, values = next(iter(cfg_dict["tune"]["space"][key].items()))
        if kind in ("choice", "grid") and not all(isinstance(v, PRIMITIVE) for v in values):
            value = json.loads(value)
        out[key] = value
    return out


def trial_config(cfg_dict: dict, params: dict) -> ExperimentConfig:
    """The config a trial trains with: the searched values in, full-length epochs, and torch's threads
    (train.cpus_per_worker) as many as the CPUs the trial holds (tune.cpus_per_trial)."""
    values = {k: v.item() if isinstance(v, np.generic) else v for k, v in decode(cfg_dict, params).items()}
    raw = with_searched_values({k: v for k, v in cfg_dict.items() if k != "tune"}, values)
    tc = cfg_dict["tune"]
    raw = with_value(raw, "train.epochs", tc["scheduler"]["max_epochs"] or raw.get("train", {}).get("epochs", 20))
    raw = with_value(raw, "train.cpus_per_worker", tc["cpus_per_trial"])
    return config_from_dict(raw, source="trial config")


def _scheduler(cfg: ExperimentConfig):
    from ray.tune import schedulers

    s = cfg.tune.scheduler
    common = dict(time_attr="epoch")  # metric and mode come from the TuneConfig
    if s.name == "asha":
        return schedulers.ASHAScheduler(max_t=cfg.trial_epochs, grace_period=s.grace_period,
                                        reduction_factor=s.reduction_factor, **common)
    if s.name == "hyperband":
        from orchestrator.hyperband import HyperBand  # Ray's, less a hang (see there)

        return HyperBand(max_t=cfg.trial_epochs, reduction_factor=s.reduction_factor, **common)
    if s.name == "pbt":
        from ray.tune.search.sample import Categorical

        # PBT multiplies a number by 0.8 or 1.2 but moves a choice to a neighbouring one: choices go as lists
        space = {k: v for k, v in param_space(cfg).items() if not isinstance(v, dict)}  # grid dims stay fixed
        mutations = {k: v.categories if isinstance(v, Categorical) else v for k, v in space.items()}
        ranges = {k: next(iter(d.items())) for k, d in cfg.tune.space.items()}
        bounds = {k: values for k, (kind, values) in ranges.items() if kind in ("uniform", "loguniform", "randint")}
        return schedulers.PopulationBasedTraining(perturbation_interval=s.perturbation_interval,
                                                  hyperparam_mutations=mutations,
                                                  custom_explore_fn=functools.partial(_within, bounds), **common)
    return schedulers.FIFOScheduler()


def _within(bounds: dict, config: dict) -> dict:
    """A PBT-perturbed config with every number back inside the range its space declares."""
    for key, (low, high) in bounds.items():
        config[key] = type(config[key])(min(max(config[key], low), high))
    return config


def _search(cfg: ExperimentConfig):
    from ray.tune.search import BasicVariantGenerator

    seed = cfg.tune.search.seed if cfg.tune.search.seed is not None else cfg.seed
    if cfg.tune.search.name == "optuna":
        from ray.tune.search.optuna import OptunaSearch
        from optuna.samplers import TPESampler

        return OptunaSearch(sampler=TPESampler(seed=seed))
    # the generator enforces the limit itself: Tune ignores TuneConfig.max_concurrent_trials for it
    return BasicVariantGenerator(random_state=seed, max_concurrent=cfg.tune.max_concurrent_trials or 0)


def _tuner(cfg: ExperimentConfig, name: str, splits: data.Splits, info: dict, run_lineage: dict, resume: bool):
    from ray import tune

    # Tune warns on every trial checkpoint when epochs are short; the trials are the progress to watch
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    t = cfg.tune
    fs, root = storage.filesystem(cfg.storage.path, cfg.storage.endpoint_url, cfg.storage.region)
    if cfg.train.num_workers == 1:
        arrays = {split: splits.arrays[split] for split in ("train", "val")}
        trainable = tune.with_parameters(single_worker_trial, cfg_dict=cfg.to_dict(), info=info, arrays=arrays,
                                         run_lineage=run_lineage)
        trainable = tune.with_resources(trainable, {"cpu": t.cpus_per_trial, "gpu": t.gpus_per_trial})
    else:
        from orchestrator.train import worker_data

        trainer_data, loop_data = worker_data(cfg, splits)
        trainable = tune.with_parameters(multi_worker_trial, cfg_dict=cfg.to_dict(), info=info,
                                         run_lineage=run_lineage, trainer_data=trainer_data, loop_data=loop_data)
        # the trial only waits on its TorchTrainer, whose workers hold the CPUs. It asks for no CPU at all
        # (Tune refuses an empty request: 1 byte of memory), or 2 workers of 1 CPU never fit on 2 CPUs
        trainable = tune.with_resources(trainable, {"cpu": 0, "memory": 1})
    if resume:
        return tune.Tuner.restore(storage.uri(fs, f"{root}/{name}"), trainable, resume_unfinished=True, resume_errored=True,
                                  storage_filesystem=fs)
    return tune.Tuner(
        trainable,
        param_space=param_space(cfg),
        tune_config=tune.TuneConfig(
            metric=t.metric, mode=t.mode, num_samples=t.num_samples,
            max_concurrent_trials=t.max_concurrent_trials if t.search.name == "optuna" else None,
            time_budget_s=t.time_budget_s, scheduler=_scheduler(cfg), search_alg=_search(cfg),
            reuse_actors=True,  # a later trial may reuse a finished trial's process (no second torch import)
        ),
        run_config=tune.RunConfig(
            name=name, storage_path=root, storage_filesystem=fs,
            # PBT clones another trial's latest checkpoint while that trial runs on: keeping one would
            # delete it before the clone restores from it
            checkpoint_config=tune.CheckpointConfig(num_to_keep=None if t.scheduler.name == "pbt" else 1,
                                                    checkpoint_score_attribute=t.metric, checkpoint_score_order=t.mode),
            failure_config=tune.FailureConfig(max_failures=max(cfg.train.max_failures, 0)),
            verbose=1,
        ),
    )


# ---- in each trial ----------------------------------------------------------------------


def single_worker_trial(params: dict, cfg_dict: dict, info: dict, arrays: dict, run_lineage: dict) -> None:
    import ray.tune

    _quiet_trial()
    cfg = trial_config(cfg_dict, params)
    ctx = ray.tune.get_context()
    session = TuneSession(ctx.get_trial_name(), arrays, use_gpu=cfg_dict["tune"]["gpus_per_trial"] > 0)
    loop.run(cfg, describe(cfg.model, info), session, invocation=ctx.get_trial_id(), run_lineage=run_lineage,
             trial_id=ctx.get_trial_id())


def multi_worker_trial(params: dict, cfg_dict: dict, info: dict, run_lineage: dict, trainer_data: dict,
                       loop_data: dict) -> None:
    """`trainer_data`, `loop_data`: the trial's TorchTrainer's data, from train.worker_data."""
    import ray.tune
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    from orchestrator.train import train_loop_per_worker

    _quiet_trial()
    cfg = trial_config(cfg_dict, params)
    t, tc = cfg.train, cfg_dict["tune"]
    ctx = ray.tune.get_context()
    fs, root = storage.filesystem(cfg.storage.path, cfg.storage.endpoint_url, cfg.storage.region)
    resources = {"CPU": tc["cpus_per_trial"], **({"GPU": tc["gpus_per_trial"]} if tc["gpus_per_trial"] else {})}
    TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"config": cfg.to_dict(), "model_info": describe(cfg.model, info),
                           "invocation": ctx.get_trial_id(), "lineage": run_lineage, "trial_id": ctx.get_trial_id(),
                           **loop_data},
        scaling_config=ScalingConfig(num_workers=t.num_workers, use_gpu=tc["gpus_per_trial"] > 0,
                                     resources_per_worker=resources),
        run_config=RunConfig(
            name=ctx.get_trial_id(), storage_path=f"{root}/{ctx.get_experiment_name()}", storage_filesystem=fs,
            checkpoint_config=CheckpointConfig(num_to_keep=1, checkpoint_score_attribute=tc["metric"],
                                               checkpoint_score_order=tc["mode"]),
            failure_config=FailureConfig(max_failures=t.max_failures),
            logging_config=LoggingConfig(log_level="WARNING"),  # as in train: the epoch lines are the progress
            callbacks=[TuneReportCallback()],
        ),
        **trainer_data,
    ).fit()


def _quiet_trial() -> None:
    """Ray Tune logs "Checkpoint successfully created at: <path>" at every report of every trial; the
    epoch lines already say each trial's progress, and trials.csv where its checkpoints are."""
    logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)


class TuneSession:
    """loop.Session inside a single-process Tune trial: tensors from the object store, ray.tune.report."""

    rank, world = 0, 1

    def __init__(self, name: str, arrays: dict, use_gpu: bool):
        self.name = name
        self.device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
        self._tensors = {split: engine.as_tensors(x, y) for split, (x, y) in arrays.items()}

    def resume_dir(self):
        import contextlib

        import ray.tune

        checkpoint = ray.tune.get_checkpoint()
        return checkpoint.as_directory() if checkpoint is not None else contextlib.nullcontext()

    def prepare_model(self, model):
        return model.to(self.device)

    def num_rows(self, split: str) -> int:
        return len(self._tensors[split][1])

    def batches(self, split, batch_size, generator, transform):
        return engine.batches_from_tensors(*self._tensors[split], batch_size, generator, transform)

    def report(self, metrics, checkpoint_dir, dir_name):
        import ray.tune

        checkpoint = ray.tune.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        ray.tune.report(metrics, checkpoint=checkpoint)


# ---- results ----------------------------------------------------------------------------


def _best(cfg: ExperimentConfig, grid) -> dict:
    """The best (trial, epoch) over all trials, by the search metric, with its checkpoint."""
    t = cfg.tune
    sign = 1 if t.mode == "max" else -1
    candidates = []
    for result in grid:
        if result.error is not None:
            continue
        for fs, path, metrics in _checkpoints(cfg, result):
            if t.metric in metrics and not math.isnan(metrics[t.metric]):
                candidates.append((sign * metrics[t.metric], -metrics.get("epoch", 0), result, fs, path, metrics))
    if not candidates:
        raise RuntimeError("no trial produced a checkpoint; see the trial errors above")
    _, _, result, fs, path, metrics = max(candidates, key=lambda c: c[:2])
    return {
        "trial_id": result.metrics.get("trial_id", ""),
        "metrics": {k: v for k, v in metrics.items() if k in loop.REPORTED},
        "checkpoint": (fs, path),
    }


def _searched_values(cfg: ExperimentConfig, chosen: ExperimentConfig) -> dict:
    """The searched fields as the best checkpoint was trained with them. Read from the checkpoint, not
    the trial's final config: under PBT a trial's values change after its best epoch."""
    values, trained = {}, chosen.to_dict()
    for key in cfg.tune.space:
        value = trained
        for part in key.split("."):
            value = value[part]
        values[key] = value
    return values


def _checkpoints(cfg: ExperimentConfig, result):
    """(filesystem, path, metrics) of a trial's kept checkpoints: Tune's own (single-worker trials), or
    the checkpoint_path that Ray Train's TuneReportCallback reports (multi-worker trials)."""
    for ckpt, metrics in result.best_checkpoints or []:
        yield ckpt.filesystem, ckpt.path, metrics
    df = result.metrics_dataframe
    if not result.best_checkpoints and df is not None and "checkpoint_path" in df:
        fs, _ = storage.filesystem(cfg.storage.path, cfg.storage.endpoint_url, cfg.storage.region)
        for row in df.to_dict("records"):
            path = row.get("checkpoint_path")
            if isinstance(path, str) and fs.get_file_info(path).type.name == "Directory":  # num_to_keep pruned others
                yield fs, path, row


def _export(checkpoint: tuple, destination_uri: str, st) -> str:
    """Copy the winning trial checkpoint to <experiment>/best and verify it there."""
    import pyarrow.fs as pafs

    source_fs, source_path = checkpoint
    fs, dest = storage.filesystem(destination_uri, st.endpoint_url, st.region)
    fs.create_dir(dest, recursive=True)
    pafs.copy_files(source_path, dest, source_filesystem=source_fs, destination_filesystem=fs)
    read_checkpoint(destination_uri, st.endpoint_url)
    return destination_uri


def _stopping_epochs(s, max_epochs: int) -> set[int] | None:
    """The epochs after which scheduler `s` may stop a trial; None where any epoch may be one (HyperBand)."""
    if s.name == "asha":  # a trial stops at the first epoch that reaches a rung: grace_period × reduction_factor^k
        rungs, rung = set(), s.grace_period
        while rung < max_epochs:
            rungs.add(math.ceil(rung))
            rung *= s.reduction_factor
        return rungs
    return None if s.name == "hyperband" else set()  # FIFO and PBT stop no trial


def _history(result) -> list[dict]:
    """A trial's reported metrics per epoch, in epoch order: Tune's metrics dataframe, or, where that came
    back empty (Tune logs a warning and leaves it empty when it cannot read the trial's result file), the
    epoch history saved in the trial's latest checkpoint (its state.json: JSON, no weights read). Under PBT
    that history is the model's: a trial that cloned another's checkpoint lists the other's epochs up to the
    clone."""
    df = result.metrics_dataframe
    if df is not None and not df.empty and "epoch" in df:
        return df.sort_values("epoch").to_dict("records")
    ckpt = result.checkpoint  # None for a multi-worker trial: Ray Train keeps its checkpoints
    if ckpt is None:
        return []
    try:
        with ckpt.filesystem.open_input_stream(f"{ckpt.path.rstrip('/')}/state.json") as f:
            history = json.loads(f.readall()).get("history")
    except (OSError, ValueError):  # no state.json, or not JSON: no curve, as Tune's own read gave
        return []
    return history if isinstance(history, list) else []


def _stalled(cfg_dict: dict, params: dict, history: list[dict]) -> bool:
    """Whether the trial's own early stopping (train.early_stopping_patience) ended it: the loop's rule, on
    the epochs it reported."""
    t = trial_config(cfg_dict, params).train
    return loop.stalled(history, t.checkpoint_metric, t.checkpoint_mode, t.early_stopping_patience) is not None


def _trial_table(cfg: ExperimentConfig, grid) -> tuple[list[dict], dict[str, list[tuple[int, float]]]]:
    """One row per trial that trained an epoch (or failed), and each trial's metric per epoch. Its
    status: done (all epochs, or stopped early by the scheduler or by train.early_stopping_patience),
    error, or out_of_time: under a time budget, it ended short of max_epochs at an epoch where neither
    stops a trial, so the budget did."""
    t = cfg.tune
    max_epochs = cfg.trial_epochs
    stops = _stopping_epochs(t.scheduler, max_epochs)
    cfg_dict = cfg.to_dict()
    rows, curves = [], {}
    for result in grid:
        m = result.metrics or {}
        if result.error is None and not m.get("epoch"):
            continue  # never trained an epoch: a trial the time budget left unstarted, or cut in its first
        params = {k: v for k, v in (result.config or {}).items() if k in t.space}
        trial_id = m.get("trial_id") or str(result.path).rsplit("/", 1)[-1]
        history = _history(result)
        curve = [(int(h["epoch"]), float(h[t.metric])) for h in history
                 if isinstance(h.get(t.metric), (int, float)) and not math.isnan(h[t.metric])]
        curves[trial_id] = curve
        values = [v for _, v in curve]
        best = (max(values) if t.mode == "max" else min(values)) if values else None
        epochs = int(m.get("epoch", 0))
        short = result.error is None and 0 < epochs < max_epochs
        out_of_time = (short and t.time_budget_s is not None and stops is not None and epochs not in stops
                       and not _stalled(cfg_dict, params, history))
        rows.append({
            "trial_id": trial_id,
            **decode(cfg_dict, params),
            f"final_{t.metric}": m.get(t.metric),
            f"best_{t.metric}": best,
            "epochs": epochs,
            "stopped_early": short and not out_of_time,
            "status": "error" if result.error is not None else "out_of_time" if out_of_time else "done",
        })
    return rows, curves

