"""Ray Train adapter: DDP across workers, per-epoch validation, checkpoints, resume.

    orchestrator train jobs/digits-cnn.yaml            # embedded local Ray
    orchestrator train jobs/digits-cnn.yaml --address auto

The per-worker loop (loop.py) is plain PyTorch; RayTrainSession gives it DDP, the worker's
dataset shards and ray.train.report. Rerunning with the same train.run_name continues from the run's latest checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from orchestrator import data, engine, lineage, loop, storage, tracking
from orchestrator.checkpoint import is_complete, read_checkpoint
from orchestrator.config import (
    ExperimentConfig,
    TrainConfig,
    config_from_dict,
    load_yaml,
    save_config,
)
from orchestrator.errors import ConfigError
from orchestrator.models import describe
from orchestrator.runtime import check_fits, embedded


@dataclass
class TrainResult:
    run: str
    run_uri: str
    checkpoint: str  # URI of the best checkpoint
    metrics: dict  # best checkpoint's validation metrics plus test_* metrics
    start_epoch: int  # epochs already done when this invocation started (0: fresh run)
    duration_s: float
    lineage: dict  # of the best checkpoint (lineage.py)
    report: str  # URI of the run's HTML report
    mlflow_run_id: str | None = None  # when tracking.mlflow
    importance: list[dict] | None = None  # a table's columns, by how much the model relies on each (test split)
    baseline: dict | None = None  # always answering the most common class, on the test split (evaluate.baseline)

    def to_dict(self) -> dict:
        return asdict(self)


def run_name(cfg: ExperimentConfig) -> str:
    return cfg.train.run_name or f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"


def train(cfg: ExperimentConfig, address: str | None = None, splits: data.Splits | None = None,
          lineage_extra: dict | None = None, report_extra: dict | None = None) -> TrainResult:
    """Train on Ray (embedded locally unless `address`), then evaluate the best checkpoint on the
    test split and write the run's report. `splits`: the data, if the caller loaded it already;
    `lineage_extra`: more lineage for every checkpoint (e.g. the search that chose the config);
    `report_extra`: more for the report (report.run_report)."""
    from orchestrator import report
    from orchestrator.evaluate import baseline, evaluate_model
    from orchestrator.runtime import ray_session, restore_sigint

    started = time.time()
    st = cfg.storage
    storage.check_writable(st.path, st.endpoint_url, st.region, mark=True)
    tracking.check_mlflow(cfg)
    name = run_name(cfg)
    run_uri = storage.join(st.path, name)
    _check_resumable(cfg, run_uri)
    # bad data, or a model that does not fit it, is refused before Ray starts
    splits = splits or data.load_splits(cfg.data, cfg.seed, st.endpoint_url)
    model_info = describe(cfg.model, splits.info())
    with ray_session(address):
        check_resources(cfg)
        storage.write_bytes(storage.join(run_uri, "config.yaml"), save_config(cfg).encode(), st.endpoint_url, st.region)
        print(f"run {name}: {model_info['num_parameters']:,} parameters, rows {splits.num_rows}, "
              f"{cfg.train.num_workers} worker(s); storage {run_uri}", flush=True)
        if note := few_steps(cfg, splits.num_rows["train"]):
            print(note, flush=True)
        invocation = uuid.uuid4().hex  # stamped into the checkpoints this call writes
        run_lineage = lineage.collect(cfg, splits.fingerprint, **(lineage_extra or {}))
        with restore_sigint():
            result = _trainer(cfg, name, splits, model_info, invocation, run_lineage).fit()
        _prune(st, name, result)
        best_uri, best_metrics = _best_checkpoint(cfg, result)
        ckpt = read_checkpoint(best_uri, st.endpoint_url)
        latest = read_checkpoint(_uri(result.checkpoint), st.endpoint_url).train_state()
        if not math.isfinite(loss := latest["history"][-1]["train_loss"]):
            print(f"warning: training stopped in epoch {latest['epoch']} of {cfg.train.epochs}: "
                  f"{loop.diverged(loss, cfg.optim)}. Kept: {best_uri}", flush=True)
    # the best model on the test split, in this process: Ray is not needed for it
    model = ckpt.model()
    test = evaluate_model(model, *splits.arrays["test"], len(splits.label_names), cfg.train.eval_batch_size,
                          with_confusion=True)
    importance = _column_importance(model, splits, model_info, cfg.train.eval_batch_size)
    confusion = test.pop("confusion")
    metrics = {**best_metrics, **{f"test_{k}": v for k, v in test.items()}}
    base = baseline(model_info, splits.arrays["test"][1], cfg.train.class_weight == "balanced")
    report_uri = report.run_report(run_uri, ckpt, metrics, confusion, st, history=latest["history"],
                                   importance=importance, baseline=base, **(report_extra or {}))
    out = TrainResult(
        run=name,
        run_uri=run_uri,
        checkpoint=best_uri,
        metrics=metrics,
        start_epoch=latest["start_epoch"] if latest.get("invocation") == invocation else latest["epoch"],
        duration_s=round(time.time() - started, 1),
        lineage=ckpt.lineage() or {},
        report=report_uri,
        importance=importance,
        baseline=base,
    )
    report_dir = None if storage.is_remote(report_uri) else str(Path(report_uri).parent)
    out.mlflow_run_id = tracking.log_mlflow(cfg, name, out.metrics, out.lineage, report_dir)
    storage.write_bytes(storage.join(run_uri, "result.json"), json.dumps(out.to_dict(), indent=2).encode(),
                        st.endpoint_url, st.region)
    return out


MIN_STEPS = 200  # optimizer steps in a run, below which most models of a small table stop short of what they can learn


def few_steps(cfg: ExperimentConfig, rows: int) -> str | None:
    """A note where a run takes few optimizer steps in all, with the batch size that takes ten an epoch: 104 rows
    of iris in batches of 64 are 2 steps an epoch, 40 in 20 epochs, and scored 0.83 on the test rows; in
    batches of 16, 0.96."""
    t, accumulated = cfg.train, cfg.optim.grad_accum_steps
    per_step = t.batch_size_per_worker * t.num_workers * accumulated
    per_epoch = math.ceil(rows / per_step)
    if per_epoch * t.epochs >= MIN_STEPS:
        return None
    batch = 2 ** max(0, int(math.log2(max(1, rows // (10 * t.num_workers * accumulated)))))
    smaller = (f"smaller batches take more (train.batch_size_per_worker: {batch}, "
               f"{math.ceil(rows / (batch * t.num_workers * accumulated))} an epoch), or "
               if batch < t.batch_size_per_worker else "")
    return (f"note: {per_epoch * t.epochs:,} optimizer steps in all ({per_epoch} an epoch: {rows:,} training rows in "
            f"batches of {per_step:,}, {t.epochs} epochs), which most models need more of to learn: {smaller}"
            "more epochs (train.epochs)")


def _column_importance(model, splits: data.Splits, model_info: dict, batch_size: int) -> list[dict] | None:
    """evaluate.column_importance on the test split, for a model of a table of 2+ columns; None for others, and for
    a table whose columns data.feature_shape makes images (pixel0 .. pixel783), which a model reads as an image."""
    from orchestrator.blanks import features_of
    from orchestrator.evaluate import column_importance

    x, y = splits.arrays["test"]
    if splits.input_dtype != "float32" or len(splits.feature_columns or []) < 2 or x.ndim != 2:
        return None
    return column_importance(model, x, y, features_of(model_info), len(splits.label_names), batch_size)


def _check_resumable(cfg: ExperimentConfig, run_uri: str) -> None:
    """A run may resume with more epochs or other hyperparameters, but not on other data or another model."""
    try:
        saved = storage.read_bytes(storage.join(run_uri, "config.yaml"), cfg.storage.endpoint_url, cfg.storage.region)
    except (FileNotFoundError, OSError):
        return
    previous = config_from_dict(load_yaml(saved), source=f"{run_uri}/config.yaml")
    for section in ("seed", "data", "model"):
        if getattr(previous, section) != getattr(cfg, section):
            raise ConfigError(
                f"run {run_uri} was started with a different {section!r}; "
                "set a new train.run_name (or leave it empty for a fresh run)"
            )


def worker_resources(t: TrainConfig) -> dict[str, float]:
    """What each Ray Train worker reserves."""
    return {"CPU": t.cpus_per_worker, **t.resources_per_worker, **({"GPU": t.gpus_per_worker or 1} if t.use_gpu else {})}


def check_resources(cfg: ExperimentConfig) -> None:
    """Training that the embedded Ray can never fit is refused before it waits forever."""
    t = cfg.train
    need = {k: v * t.num_workers for k, v in worker_resources(t).items() if v}
    check_fits(f"training on train.num_workers {t.num_workers}", need,
               "lower train.num_workers, train.cpus_per_worker or what each worker asks for (train.use_gpu, "
               "train.gpus_per_worker, train.resources_per_worker)")


def _trainer(cfg: ExperimentConfig, name: str, splits: data.Splits, model_info: dict, invocation: str,
             run_lineage: dict):
    from ray.train import (
        CheckpointConfig,
        FailureConfig,
        LoggingConfig,
        RunConfig,
        ScalingConfig,
    )
    from ray.train.torch import TorchTrainer

    t = cfg.train
    resources = worker_resources(t)
    fs, root = storage.filesystem(cfg.storage.path, cfg.storage.endpoint_url, cfg.storage.region)
    trainer_data, loop_data = worker_data(cfg, splits)
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"config": cfg.to_dict(), "model_info": model_info, "invocation": invocation,
                           "lineage": run_lineage, **loop_data},
        scaling_config=ScalingConfig(num_workers=t.num_workers, use_gpu=t.use_gpu, resources_per_worker=resources),
        run_config=RunConfig(
            name=name,
            storage_path=root,
            storage_filesystem=fs,
            checkpoint_config=CheckpointConfig(
                num_to_keep=t.num_to_keep,
                checkpoint_score_attribute=t.checkpoint_metric,
                checkpoint_score_order=t.checkpoint_mode,
            ),
            failure_config=FailureConfig(max_failures=t.max_failures),
            logging_config=LoggingConfig(log_level="WARNING"),  # the epoch lines are the progress
        ),
        **trainer_data,
    )


def worker_data(cfg: ExperimentConfig, splits: data.Splits) -> tuple[dict, dict]:
    """How a TorchTrainer's workers get the train and val splits: (TorchTrainer keyword arguments,
    train_loop_config entries for RayTrainSession).

    In memory (the default), the arrays go through the object store and each worker takes its share:
    no Ray Data in training. Ray Datasets handed to Ray Train are set up for the run, with split
    coordinators for several workers, before the first step: 1 s more per fit with 1 worker here,
    8 s more with 2. With train.streaming, Ray Train streams each worker's shard every epoch."""
    import ray

    if not cfg.train.streaming:
        return {}, {"arrays": ray.put({split: splits.arrays[split] for split in ("train", "val")})}
    from ray.train import DataConfig

    # Ray Data leaves a detached stats actor on the node where a dataset first runs. On a cluster that
    # must be the driver's (Ray Train's split coordinators run there), never a GPU node, which the
    # actor would keep from ever going idle. On the embedded Ray, one node: one worker reads the
    # whole dataset itself, with no split coordinators to start.
    to_split = [] if cfg.train.num_workers == 1 and embedded() else "all"
    return ({"datasets": {split: splits.dataset(split) for split in ("train", "val")},
             "dataset_config": DataConfig(datasets_to_split=to_split)},
            {"num_train_rows": splits.num_rows["train"]})


def _uri(checkpoint) -> str:
    """A Ray Train checkpoint's location as a URI read_checkpoint takes."""
    return storage.uri(checkpoint.filesystem, checkpoint.path)


def _best_checkpoint(cfg: ExperimentConfig, result) -> tuple[str, dict]:
    """The kept checkpoint that `checkpoint_metric` ranks best, of those whose model is numbers: a diverged
    epoch's (loop.diverged) is not."""
    reported = [(c, m) for c, m in (result.best_checkpoints or []) if cfg.train.checkpoint_metric in m]
    ranked = [(c, m) for c, m in reported if math.isfinite(m["train_loss"])
              and math.isfinite(m[cfg.train.checkpoint_metric])]
    if reported and not ranked:
        raise RuntimeError(f"no epoch left a model to keep: {loop.diverged(reported[-1][1]['train_loss'], cfg.optim)}")
    if not ranked:
        raise RuntimeError(f"run finished without a checkpoint; see the logs under {result.path}")
    sign = 1 if cfg.train.checkpoint_mode == "max" else -1
    ckpt, metrics = max(ranked, key=lambda cm: (sign * cm[1][cfg.train.checkpoint_metric], cm[1]["epoch"]))
    return _uri(ckpt), {k: v for k, v in metrics.items() if isinstance(v, (int, float))}


# ---- on each worker ---------------------------------------------------------------------


def train_loop_per_worker(loop_config: dict) -> None:
    _quiet_train_reports()
    cfg = config_from_dict(loop_config["config"])
    # Tune trials have TensorBoard files from Tune already
    session = RayTrainSession(loop_config.get("arrays"), loop_config.get("num_train_rows"),
                              None if loop_config.get("trial_id") else cfg.storage)
    loop.run(cfg, loop_config["model_info"], session, loop_config["invocation"], loop_config.get("lineage"),
             loop_config.get("trial_id"))


class RayTrainSession:
    """loop.Session on a Ray Train worker: DDP, this worker's share of the data, ray.train.report.
    `arrays`: the object-store reference from worker_data; or None to stream Ray Data shards, of
    `num_train_rows` rows in all."""

    def __init__(self, arrays, num_train_rows: int | None, st=None):
        import ray.train
        import ray.train.torch

        from orchestrator.tracking import TensorBoard

        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()
        self.name = ctx.get_experiment_name()
        self.st = st
        self.tensorboard = None
        if self.rank == 0 and st is not None:  # `st`: the storage config, where TensorBoard files go
            self.tensorboard = TensorBoard(storage.join(st.path, self.name, "tensorboard"), st.endpoint_url, st.region)
        self.device = ray.train.torch.get_device()
        if arrays is None:
            self._shards = {split: ray.train.get_dataset_shard(split) for split in ("train", "val")}
            self._cached = {}
            self._train_rows = num_train_rows // self.world  # Ray Data's equal split drops the remainder too
        else:
            self._cached = {split: engine.worker_share(x, y, self.rank, self.world)
                            for split, (x, y) in ray.get(arrays).items()}

    def resume_dir(self):
        """The newest complete checkpoint of the run. Ray registers a reported checkpoint a moment
        after report() returns, so after a crash its latest can lag the run's directory by an epoch
        or more; a newer checkpoint there that verifies against its manifest wins."""
        import ray.train

        checkpoint = ray.train.get_checkpoint()
        newer = newest_checkpoint(self.st, self.name) if self.st is not None else None
        if newer is not None and (checkpoint is None or newer[0] > _epoch_of(checkpoint.path)):
            return contextlib.nullcontext(newer[1])
        return checkpoint.as_directory() if checkpoint is not None else contextlib.nullcontext()

    def prepare_model(self, model):
        import ray.train.torch

        return ray.train.torch.prepare_model(model)

    def num_rows(self, split: str) -> int:
        return len(self._cached[split][1]) if self._cached else self._train_rows

    def batches(self, split, batch_size, generator, transform):
        if self._cached:
            return engine.batches_from_tensors(*self._cached[split], batch_size, generator, transform)
        seed = None if generator is None else generator.initial_seed()
        return _stream(self._shards[split], batch_size, transform, seed)

    def report(self, metrics, checkpoint_dir, dir_name):
        import ray.train

        if self.tensorboard:
            self.tensorboard.log(metrics, metrics["epoch"])
        checkpoint = ray.train.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=dir_name)


def newest_checkpoint(st, run: str) -> tuple[int, str] | None:
    """(epoch, URI) of the run's newest complete epoch-NNNN checkpoint, or None. One cut short by a
    crash is passed over; the loop verifies the chosen one's contents when it reads it."""
    from pyarrow.fs import FileSelector

    fs, root = storage.filesystem(storage.join(st.path, run), st.endpoint_url, st.region)
    entries = fs.get_file_info(FileSelector(root, allow_not_found=True))
    for epoch, name in sorted(((_epoch_of(e.path), e.base_name) for e in entries
                               if e.base_name.startswith("epoch-")), reverse=True):
        uri = storage.join(st.path, run, name)
        if is_complete(uri, st.endpoint_url):
            return epoch, uri
    return None


def _epoch_of(path: str) -> int:
    name = path.rstrip("/").rsplit("/", 1)[-1]
    return int(name.split("-")[1]) if name.startswith("epoch-") and name[6:].isdigit() else -1


def _prune(st, run: str, result) -> None:
    """Remove the run's checkpoints Ray does not track (written before a crash, never registered), so
    what remains is what Ray keeps: the train.num_to_keep best and the latest (resume needs it)."""
    if result.checkpoint is None:
        return
    kept = {_epoch_of(c.path) for c, _ in result.best_checkpoints or []} | {_epoch_of(result.checkpoint.path)}
    fs, root = storage.filesystem(storage.join(st.path, run), st.endpoint_url, st.region)
    from pyarrow.fs import FileSelector, FileType

    for entry in fs.get_file_info(FileSelector(root, allow_not_found=True)):
        if entry.type == FileType.Directory and entry.base_name.startswith("epoch-") and _epoch_of(entry.path) not in kept:
            fs.delete_dir(entry.path)


def _quiet_train_reports() -> None:
    """Ray Train 2.60 logs every report at INFO under a logger named by its file path, which
    RunConfig's LoggingConfig does not reach; the epoch lines already say the same."""
    import logging

    from ray.train.v2._internal.execution import context

    logging.getLogger(context.__file__).setLevel(logging.WARNING)


def _stream(shard, batch_size: int, transform=None, seed: int | None = None):
    shuffle = {"local_shuffle_buffer_size": 4 * batch_size, "local_shuffle_seed": seed} if seed is not None else {}
    for batch in shard.iter_torch_batches(batch_size=batch_size, **shuffle):
        yield (transform(batch["x"]) if transform else batch["x"]), batch["y"]
