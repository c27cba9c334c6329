"""Ray Train adapter: DDP across workers, per-epoch validation, checkpoints, resume.

    orchestrator train jobs/digits-cnn.yaml            # embedded local Ray
    orchestrator train jobs/digits-cnn.yaml --address auto

The per-worker loop is plain PyTorch (engine.py) plus the Ray calls marked (1)-(4).
Rerunning with the same train.run_name continues from the run's latest checkpoint.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass

import torch
from pyarrow.fs import LocalFileSystem

from orchestrator import data, engine, storage
from orchestrator.checkpoint import read_checkpoint, write_checkpoint
from orchestrator.config import ExperimentConfig, config_from_dict, save_config
from orchestrator.errors import ConfigError
from orchestrator.models import build_model, num_parameters

SHARD_READ_BATCH = 4096


@dataclass
class TrainResult:
    run: str
    run_uri: str
    checkpoint: str  # URI of the best checkpoint
    metrics: dict  # best checkpoint's validation metrics plus test_* metrics
    start_epoch: int  # epochs already done when this invocation started (0: fresh run)
    duration_s: float

    def to_dict(self) -> dict:
        return asdict(self)


def run_name(cfg: ExperimentConfig) -> str:
    return cfg.train.run_name or f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"


def train(cfg: ExperimentConfig, address: str | None = None) -> TrainResult:
    """Train on Ray (embedded locally unless `address`), then evaluate the best checkpoint on the test split."""
    from orchestrator.evaluate import evaluate_model
    from orchestrator.runtime import ray_session

    started = time.time()
    st = cfg.storage
    storage.check_writable(st.path, st.endpoint_url, st.region)
    name = run_name(cfg)
    run_uri = storage.join(st.path, name)
    _check_resumable(cfg, run_uri)
    with ray_session(address):
        splits = data.load_splits(cfg.data, cfg.seed, st.endpoint_url)
        model_info = _model_info(cfg, splits)  # also proves the model fits the data, before any worker starts
        storage.write_bytes(storage.join(run_uri, "config.yaml"), save_config(cfg).encode(), st.endpoint_url, st.region)
        print(f"run {name}: {model_info['num_parameters']:,} parameters, rows {splits.num_rows}, "
              f"{cfg.train.num_workers} worker(s); storage {run_uri}", flush=True)
        invocation = uuid.uuid4().hex  # stamped into the checkpoints this call writes
        result = _trainer(cfg, name, splits, model_info, invocation).fit()
        best_uri, best_metrics = _best_checkpoint(cfg, result)
        ckpt = read_checkpoint(best_uri, st.endpoint_url)
        test = evaluate_model(ckpt.model(), splits.test, len(splits.label_names), cfg.train.eval_batch_size)
    out = TrainResult(
        run=name,
        run_uri=run_uri,
        checkpoint=best_uri,
        metrics={**best_metrics, **{f"test_{k}": v for k, v in test.items()}},
        start_epoch=_start_epoch(result, invocation, st.endpoint_url),
        duration_s=round(time.time() - started, 1),
    )
    storage.write_bytes(storage.join(run_uri, "result.json"), json.dumps(out.to_dict(), indent=2).encode(),
                        st.endpoint_url, st.region)
    return out


def _model_info(cfg: ExperimentConfig, splits: data.Splits) -> dict:
    model = build_model(cfg.model, splits.input_shape, len(splits.label_names), splits.mean, splits.std)
    return {
        "family": cfg.model.name,
        "input_shape": splits.input_shape,
        "input_dtype": "float32",
        "label_names": splits.label_names,
        "normalization": splits.normalization(),
        "num_parameters": num_parameters(model),
        "data_fingerprint": splits.fingerprint,
    }


def _check_resumable(cfg: ExperimentConfig, run_uri: str) -> None:
    """A run may resume with more epochs or other hyperparameters, but not on other data or another model."""
    try:
        saved = storage.read_bytes(storage.join(run_uri, "config.yaml"), cfg.storage.endpoint_url, cfg.storage.region)
    except (FileNotFoundError, OSError):
        return
    import yaml

    previous = config_from_dict(yaml.safe_load(saved), source=f"{run_uri}/config.yaml")
    for section in ("seed", "data", "model"):
        if getattr(previous, section) != getattr(cfg, section):
            raise ConfigError(
                f"run {run_uri} was started with a different {section!r}; "
                "set a new train.run_name (or leave it empty for a fresh run)"
            )


def _trainer(cfg: ExperimentConfig, name: str, splits: data.Splits, model_info: dict, invocation: str):
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    t = cfg.train
    resources = {"CPU": t.cpus_per_worker, **t.resources_per_worker}
    if t.use_gpu:
        resources["GPU"] = t.gpus_per_worker or 1
    fs, root = storage.filesystem(cfg.storage.path, cfg.storage.endpoint_url, cfg.storage.region)
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"config": cfg.to_dict(), "model_info": model_info, "invocation": invocation,
                           "num_train_rows": splits.num_rows["train"]},
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
        datasets={"train": splits.train, "val": splits.val},
    )


def _start_epoch(result, invocation: str, endpoint_url: str | None) -> int:
    """Epochs done before this call: from the latest checkpoint, or all of them if this call trained none."""
    latest = result.checkpoint
    uri = latest.path if isinstance(latest.filesystem, LocalFileSystem) else f"s3://{latest.path}"
    state = read_checkpoint(uri, endpoint_url).train_state()
    return state["start_epoch"] if state.get("invocation") == invocation else state["epoch"]


def _best_checkpoint(cfg: ExperimentConfig, result) -> tuple[str, dict]:
    ranked = [(c, m) for c, m in (result.best_checkpoints or []) if cfg.train.checkpoint_metric in m]
    if not ranked:
        raise RuntimeError(f"run finished without a checkpoint; see the logs under {result.path}")
    sign = 1 if cfg.train.checkpoint_mode == "max" else -1
    ckpt, metrics = max(ranked, key=lambda cm: (sign * cm[1][cfg.train.checkpoint_metric], cm[1]["epoch"]))
    uri = ckpt.path if isinstance(ckpt.filesystem, LocalFileSystem) else f"s3://{ckpt.path}"
    return uri, {k: v for k, v in metrics.items() if isinstance(v, (int, float))}


# ---- on each worker ---------------------------------------------------------------------


def train_loop_per_worker(loop_config: dict) -> None:
    import ray.train
    import ray.train.torch

    _quiet_train_reports()
    cfg = config_from_dict(loop_config["config"])
    info = loop_config["model_info"]
    t = cfg.train
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(max(1, int(t.cpus_per_worker)))
    torch.manual_seed(cfg.seed)
    device = ray.train.torch.get_device()
    num_classes = len(info["label_names"])
    norm = info["normalization"]
    model = build_model(cfg.model, info["input_shape"], num_classes, norm["mean"], norm["std"])

    # (1) resume from the run's latest checkpoint, if any
    start_epoch, history, optim_state = 0, [], None
    if (resume := ray.train.get_checkpoint()) is not None:
        with resume.as_directory() as d:
            ckpt = read_checkpoint(d)
            model.load_state_dict(ckpt.model_state())
            state, optim_state = ckpt.train_state(), ckpt.optimizer_state()
        start_epoch, history = state["epoch"], state["history"]
        if rank == 0:
            _say(f"resuming {ctx.get_experiment_name()} after epoch {start_epoch}")

    # (2) DDP and device placement
    model = ray.train.torch.prepare_model(model)
    plain_model = getattr(model, "module", model)
    optimizer = engine.make_optimizer(model, cfg.optim)
    if optim_state is not None:
        optimizer.load_state_dict(optim_state)
    scaler = torch.amp.GradScaler("cuda") if device.type == "cuda" and t.precision == "fp16" else None

    # (3) this worker's shard of the data
    train_shard, val_shard = ray.train.get_dataset_shard("train"), ray.train.get_dataset_shard("val")
    cached = None if t.streaming else (_read_shard(train_shard), _read_shard(val_shard))
    rows_per_worker = -(-loop_config["num_train_rows"] // world)
    batches_per_epoch = -(-rows_per_worker // t.batch_size_per_worker)
    aug = cfg.data.augment
    std = torch.tensor(norm["std"])

    def transform(x):
        return data.augment(x, aug.max_shift_px, aug.noise_std, std, gen) if aug.enabled else x

    for epoch in range(start_epoch, t.epochs):
        gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch * 1_009 + rank)
        if cached:
            train_batches = engine.batches_from_tensors(*cached[0], t.batch_size_per_worker, gen, transform)
            val_batches = engine.batches_from_tensors(*cached[1], t.eval_batch_size)
        else:
            train_batches = _stream(train_shard, t.batch_size_per_worker, transform, seed=cfg.seed + epoch)
            val_batches = _stream(val_shard, t.eval_batch_size)
        tick = time.perf_counter()
        stats = engine.train_epoch(model, train_batches, optimizer, cfg.optim, epoch, t.epochs, batches_per_epoch,
                                   device, t.precision, scaler)
        train_s = time.perf_counter() - tick
        val = engine.evaluate(plain_model, val_batches, num_classes, device, t.precision)
        totals = _all_reduce(world, device, loss=torch.tensor(stats["loss"] * stats["num_samples"], dtype=torch.float64),
                             n=torch.tensor(stats["num_samples"], dtype=torch.float64), train_s=torch.tensor(train_s, dtype=torch.float64),
                             **val)
        metrics = {
            "epoch": epoch + 1,
            "train_loss": (totals["loss"] / totals["n"]).item(),
            "train_samples_per_s": totals["n"].item() / (totals["train_s"].item() / world),
            "lr": optimizer.param_groups[0]["lr"],
            **engine.metrics_from_stats({"confusion": totals["confusion"], "loss_sum": totals["loss_sum"]}, "val_"),
        }
        history.append({**metrics, "finished_at": time.time()})  # wall clock: start-up and pacing, for benchmarks
        if rank == 0:
            _say(_progress_line(metrics, t.epochs))
        # (4) report metrics every epoch; rank 0 attaches the checkpoint (DDP replicas are identical)
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = None
            if rank == 0:
                write_checkpoint(tmp, model=plain_model, config=cfg, model_info=info, metrics=metrics,
                                 optimizer=optimizer,
                                 train_state={"epoch": epoch + 1, "start_epoch": start_epoch, "history": history,
                                              "invocation": loop_config["invocation"]})
                checkpoint = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=f"epoch-{epoch + 1:04d}")


def _quiet_train_reports() -> None:
    """Ray Train 2.60 logs every report at INFO under a logger named by its file path, which
    RunConfig's LoggingConfig does not reach; the epoch lines already say the same."""
    import logging

    from ray.train.v2._internal.execution import context

    logging.getLogger(context.__file__).setLevel(logging.WARNING)


def _say(line: str) -> None:
    """One progress line to the driver's console (Ray Train's patched print would emit it twice)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _read_shard(shard) -> tuple[torch.Tensor, torch.Tensor]:
    """The worker's whole shard as tensors, read once: later epochs cost no Ray Data overhead."""
    xs, ys = [], []
    for batch in shard.iter_torch_batches(batch_size=SHARD_READ_BATCH):
        xs.append(batch["x"])
        ys.append(batch["y"])
    return torch.cat(xs), torch.cat(ys)


def _stream(shard, batch_size: int, transform=None, seed: int | None = None):
    shuffle = {"local_shuffle_buffer_size": 4 * batch_size, "local_shuffle_seed": seed} if seed is not None else {}
    for batch in shard.iter_torch_batches(batch_size=batch_size, **shuffle):
        yield (transform(batch["x"]) if transform else batch["x"]), batch["y"]


def _all_reduce(world: int, device, **tensors: torch.Tensor) -> dict[str, torch.Tensor]:
    if world == 1:
        return tensors
    import torch.distributed as dist

    out = {}
    for key, value in tensors.items():
        value = value.to(device)
        dist.all_reduce(value)
        out[key] = value.cpu()
    return out


def _progress_line(m: dict, epochs: int) -> str:
    return (
        f"epoch {m['epoch']:>3}/{epochs}  train_loss {m['train_loss']:.4f}  val_loss {m['val_loss']:.4f}  "
        f"val_accuracy {m['val_accuracy']:.4f}  val_f1 {m['val_f1']:.4f}  lr {m['lr']:.2e}  "
        f"{m['train_samples_per_s']:,.0f} samples/s"
    )
