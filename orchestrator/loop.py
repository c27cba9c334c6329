"""The training loop of one worker or one Tune trial: plain PyTorch plus a small Session.

A Session hides where the loop runs: a Ray Train worker (DDP, dataset shards,
ray.train.report) or a single-process Tune trial (tensors from the object store,
ray.tune.report). The loop itself resumes, trains, validates, checkpoints and reports the
same way in both.
"""

from __future__ import annotations

import contextlib
import math
import sys
import tempfile
import time
from typing import Callable, ContextManager, Iterator, Protocol

import torch

from orchestrator import data, engine, lineage
from orchestrator.checkpoint import read_checkpoint, shard_name, write_checkpoint, write_shard
from orchestrator.config import ExperimentConfig
from orchestrator.models import model_for


# what every epoch reports (and checkpoints carry in metrics.json); a language model adds perplexity
REPORTED = ("epoch", "train_loss", "train_samples_per_s", "train_data_wait_share", "lr", "val_loss", "val_accuracy",
            "val_precision", "val_recall", "val_f1", "val_perplexity", "val_bits_per_byte")


class Session(Protocol):
    rank: int
    world: int
    device: torch.device
    name: str  # run or trial name, for messages

    def resume_dir(self) -> ContextManager[str | None]:
        """The directory of the checkpoint to resume from, or None."""

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """Device placement (and DDP)."""

    def num_rows(self, split: str) -> int:
        """Rows of `split` that this worker sees per epoch."""

    def batches(self, split: str, batch_size: int, generator: torch.Generator | None,
                transform: Callable | None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch of (x, y) batches of this worker's part of `split`."""

    def report(self, metrics: dict, checkpoint_dir: str | None, dir_name: str) -> None:
        """Hand the epoch's metrics (and rank 0's checkpoint) to Ray."""


def run(cfg: ExperimentConfig, info: dict, session: Session, invocation: str, run_lineage: dict | None = None,
        trial_id: str | None = None) -> None:
    """Train cfg.train.epochs epochs (fewer if early_stopping_patience says so), resuming after the
    latest checkpoint if there is one.
    `run_lineage` (lineage.collect) is stamped into every checkpoint."""
    t = cfg.train
    torch.set_num_threads(max(1, int(t.cpus_per_worker)))
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = t.tf32
    torch.manual_seed(cfg.seed)
    num_classes = len(info["label_names"])
    norm = info["normalization"]
    model = model_for(cfg.model, info, normalized=True)
    language_model = cfg.model.name == "gpt"
    sharded = t.strategy == "fsdp" and session.world > 1

    start_epoch, history, optim_state = 0, [], None
    with session.resume_dir() as d:
        if d is not None:
            ckpt = read_checkpoint(d)
            model.load_state_dict(ckpt.model_state())  # a sharded checkpoint's parts joined: any world size
            state = ckpt.train_state()
            start_epoch, history = state["epoch"], state["history"]
            switched = ckpt.config.optim.name != cfg.optim.name  # PBT may pick another optimizer for a clone
            optim_state = None if switched else ckpt.optimizer_state()
            if session.rank == 0:
                say(f"resuming {session.name} after epoch {start_epoch}" + (
                    f"; optimizer {ckpt.config.optim.name} -> {cfg.optim.name}, its state starts afresh"
                    if switched else ""))

    device = session.device
    model = engine.shard_model(model, device) if sharded else session.prepare_model(model)
    plain_model = getattr(model, "module", model)  # DDP wraps; evaluation and checkpoints use the module
    optimizer = engine.make_optimizer(model, cfg.optim)
    if optim_state is not None:
        _load_optimizer_state(optimizer, optim_state)
    step_model = torch.compile(model) if t.compile else model
    scaler = torch.amp.GradScaler("cuda") if device.type == "cuda" and t.precision == "fp16" else None
    batches_per_epoch = -(-session.num_rows("train") // t.batch_size_per_worker)
    aug = getattr(cfg.data, "augment", None)
    std = torch.tensor(norm["std"])
    class_weight = None
    if t.class_weight == "balanced":
        class_weight = engine.balanced_class_weights(info["class_counts"]).to(device)

    for epoch in range(start_epoch, t.epochs):
        if (why := stalled(history, t.checkpoint_metric, t.checkpoint_mode, t.early_stopping_patience)) is not None:
            if session.rank == 0:  # every rank has the same history: all stop together
                say(f"{session.name}: {why}")
            break
        gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch * 1_009 + session.rank)
        augmented = aug is not None and aug.enabled
        transform = ((lambda x: data.augment(x, aug.max_shift_px, aug.noise_std, std, gen, aug.flip)) if augmented
                     else None)
        tick = time.perf_counter()
        batches = engine.prefetch(session.batches("train", t.batch_size_per_worker, gen, transform), device,
                                  t.prefetch_batches)
        stats = engine.train_epoch(step_model, batches, optimizer, cfg.optim, epoch, t.epochs, batches_per_epoch,
                                   device, t.precision, scaler, class_weight)
        train_s = time.perf_counter() - tick
        val = engine.evaluate(plain_model, session.batches("val", t.eval_batch_size, None, None), num_classes, device,
                              t.precision)
        f64 = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
        totals = _all_reduce(session.world, device, loss=f64(stats["loss"] * stats["num_samples"]),
                             n=f64(stats["num_samples"]), train_s=f64(train_s), wait_s=f64(stats["data_wait_s"]), **val)
        metrics = {
            "epoch": epoch + 1,
            "train_loss": (totals["loss"] / totals["n"]).item(),
            "train_samples_per_s": totals["n"].item() / (totals["train_s"].item() / session.world),
            "train_data_wait_share": totals["wait_s"].item() / max(totals["train_s"].item(), 1e-9),
            "lr": optimizer.param_groups[0]["lr"],
            **engine.metrics_from_stats({"confusion": totals["confusion"], "loss_sum": totals["loss_sum"]}, "val_",
                                        language_model),
        }
        history.append({**metrics, "finished_at": time.time()})  # wall clock: start-up and pacing, for benchmarks
        if session.rank == 0:
            say(progress_line(metrics, t.epochs))
        train_state = {"epoch": epoch + 1, "start_epoch": start_epoch, "history": history, "invocation": invocation}
        stamp = lineage.stamp(run_lineage or {}, cfg, session.name, trial_id, epoch + 1)
        # report every epoch. DDP: rank 0 attaches the checkpoint (replicas are identical); FSDP: every
        # rank attaches its shard, and Ray gathers them into one directory
        with tempfile.TemporaryDirectory() if session.rank == 0 or sharded else contextlib.nullcontext() as tmp:
            shards = _write_shards(tmp, session, device, plain_model, optimizer) if sharded else None
            if session.rank == 0:
                write_checkpoint(tmp, model=None if sharded else plain_model, config=cfg, model_info=info,
                                 metrics=metrics, optimizer=optimizer, train_state=train_state, lineage=stamp,
                                 shards=shards)
            session.report(metrics, tmp, f"epoch-{epoch + 1:04d}")
        if not math.isfinite(metrics["train_loss"]):  # all-reduced: every rank stops here, as Keras' TerminateOnNaN
            if session.rank == 0:
                say(f"{session.name}: stopped in epoch {epoch + 1}: {diverged(metrics['train_loss'], cfg.optim)}")
            break


def diverged(loss: float, optim) -> str:
    """Why a run stopped whose training loss is no longer a number, and what to change."""
    clip = "" if optim.grad_clip_norm else ", or clip the gradients (optim.grad_clip_norm: 1.0)"
    return f"the training loss is {loss}: the model diverged; lower optim.lr ({optim.lr:g}){clip}"


def stalled(history: list[dict], metric: str, mode: str, patience: int | None) -> str | None:
    """Why to stop early, or None: the best `metric` so far is `patience` or more epochs old (a tie
    with it is no improvement)."""
    if patience is None or not history:
        return None
    values = [h[metric] for h in history]
    best = values.index(max(values) if mode == "max" else min(values))
    since = len(values) - 1 - best
    if since < patience:
        return None
    return (f"stopping early: {metric} has not improved for {since} epochs "
            f"(best {values[best]:.4f} at epoch {history[best]['epoch']})")


def _write_shards(directory: str, session: Session, device, model, optimizer) -> dict[str, dict]:
    """Every rank writes its shard; rank 0 learns every shard's sha256 and size for the manifest."""
    import torch.distributed as dist

    _, entry = write_shard(directory, session.rank, session.world, model, optimizer)
    mine = torch.tensor(list(bytes.fromhex(entry["sha256"])) + [entry["bytes"]], dtype=torch.int64, device=device)
    every = [torch.empty_like(mine) for _ in range(session.world)]
    dist.all_gather(every, mine)
    return {shard_name(rank, session.world): {"sha256": bytes(t.tolist()[:32]).hex(), "bytes": t.tolist()[32]}
            for rank, t in enumerate(every)}


def _load_optimizer_state(optimizer, state: dict) -> None:
    """Full optimizer state (torch's format) into the optimizer: the per-parameter state (momentum,
    moments) from the checkpoint, the hyperparameters from the config, which a resumed run or a PBT
    clone may have changed. With FSDP, a tensor shaped like its sharded parameter is sharded the same
    way first, so each rank keeps its part."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    params = [p for group in optimizer.param_groups for p in group["params"]]
    for pid, values in state["state"].items():
        p = params[int(pid)]
        if isinstance(p, DTensor):
            for key, value in values.items():
                if torch.is_tensor(value) and value.shape == p.shape:
                    # every rank holds the full tensor: each takes its part, nothing is sent
                    values[key] = distribute_tensor(value.to(p.device_mesh.device_type), p.device_mesh, p.placements,
                                                    src_data_rank=None)
    configured = [{k: v for k, v in group.items() if k != "params"} for group in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, settings in zip(optimizer.param_groups, configured):
        group.update(settings)


def say(line: str) -> None:
    """One progress line to the driver's console (Ray Train's patched print would emit it twice)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def progress_line(m: dict, epochs: int) -> str:
    quality = (f"val_perplexity {m['val_perplexity']:.3f}  val_bits_per_byte {m['val_bits_per_byte']:.3f}"
               if "val_perplexity" in m else f"val_accuracy {m['val_accuracy']:.4f}  val_f1 {m['val_f1']:.4f}")
    return (
        f"epoch {m['epoch']:>3}/{epochs}  train_loss {m['train_loss']:.4f}  val_loss {m['val_loss']:.4f}  "
        f"{quality}  lr {m['lr']:.2e}  {m['train_samples_per_s']:,.0f} samples/s"
    )


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
