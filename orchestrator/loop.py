"""The training loop of one worker or one Tune trial: plain PyTorch plus a small Session.

A Session hides where the loop runs: a Ray Train worker (DDP, dataset shards,
ray.train.report) or a single-process Tune trial (tensors from the object store,
ray.tune.report). The loop itself resumes, trains, validates, checkpoints and reports the
same way in both.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
import time
from typing import Callable, ContextManager, Iterator, Protocol

import torch

from orchestrator import data, engine, lineage
from orchestrator.checkpoint import read_checkpoint, write_checkpoint
from orchestrator.config import ExperimentConfig
from orchestrator.models import build_model


# what every epoch reports (and checkpoints carry in metrics.json)
REPORTED = ("epoch", "train_loss", "train_samples_per_s", "lr", "val_loss", "val_accuracy", "val_precision",
            "val_recall", "val_f1")


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
    """Train cfg.train.epochs epochs, resuming after the latest checkpoint if there is one.
    `run_lineage` (lineage.collect) is stamped into every checkpoint."""
    t = cfg.train
    torch.set_num_threads(max(1, int(t.cpus_per_worker)))
    torch.manual_seed(cfg.seed)
    num_classes = len(info["label_names"])
    norm = info["normalization"]
    model = build_model(cfg.model, info["input_shape"], num_classes, norm["mean"], norm["std"])

    start_epoch, history, optim_state = 0, [], None
    with session.resume_dir() as d:
        if d is not None:
            ckpt = read_checkpoint(d)
            model.load_state_dict(ckpt.model_state())
            state, optim_state = ckpt.train_state(), ckpt.optimizer_state()
            start_epoch, history = state["epoch"], state["history"]
            if session.rank == 0:
                say(f"resuming {session.name} after epoch {start_epoch}")

    model = session.prepare_model(model)
    plain_model = getattr(model, "module", model)  # DDP wraps; evaluation and checkpoints use the module
    optimizer = engine.make_optimizer(model, cfg.optim)
    if optim_state is not None:
        optimizer.load_state_dict(optim_state)
    device = session.device
    scaler = torch.amp.GradScaler("cuda") if device.type == "cuda" and t.precision == "fp16" else None
    batches_per_epoch = -(-session.num_rows("train") // t.batch_size_per_worker)
    aug = cfg.data.augment
    std = torch.tensor(norm["std"])

    for epoch in range(start_epoch, t.epochs):
        gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch * 1_009 + session.rank)
        transform = (lambda x: data.augment(x, aug.max_shift_px, aug.noise_std, std, gen)) if aug.enabled else None
        tick = time.perf_counter()
        stats = engine.train_epoch(model, session.batches("train", t.batch_size_per_worker, gen, transform), optimizer,
                                   cfg.optim, epoch, t.epochs, batches_per_epoch, device, t.precision, scaler)
        train_s = time.perf_counter() - tick
        val = engine.evaluate(plain_model, session.batches("val", t.eval_batch_size, None, None), num_classes, device,
                              t.precision)
        f64 = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
        totals = _all_reduce(session.world, device, loss=f64(stats["loss"] * stats["num_samples"]),
                             n=f64(stats["num_samples"]), train_s=f64(train_s), **val)
        metrics = {
            "epoch": epoch + 1,
            "train_loss": (totals["loss"] / totals["n"]).item(),
            "train_samples_per_s": totals["n"].item() / (totals["train_s"].item() / session.world),
            "lr": optimizer.param_groups[0]["lr"],
            **engine.metrics_from_stats({"confusion": totals["confusion"], "loss_sum": totals["loss_sum"]}, "val_"),
        }
        history.append({**metrics, "finished_at": time.time()})  # wall clock: start-up and pacing, for benchmarks
        if session.rank == 0:
            say(progress_line(metrics, t.epochs))
        # report every epoch; rank 0 attaches the checkpoint (DDP replicas are identical)
        with tempfile.TemporaryDirectory() if session.rank == 0 else contextlib.nullcontext() as tmp:
            if tmp is not None:
                write_checkpoint(tmp, model=plain_model, config=cfg, model_info=info, metrics=metrics,
                                 optimizer=optimizer,
                                 train_state={"epoch": epoch + 1, "start_epoch": start_epoch, "history": history,
                                              "invocation": invocation},
                                 lineage=lineage.stamp(run_lineage or {}, cfg, session.name, trial_id, epoch + 1))
            session.report(metrics, tmp, f"epoch-{epoch + 1:04d}")


def say(line: str) -> None:
    """One progress line to the driver's console (Ray Train's patched print would emit it twice)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def progress_line(m: dict, epochs: int) -> str:
    return (
        f"epoch {m['epoch']:>3}/{epochs}  train_loss {m['train_loss']:.4f}  val_loss {m['val_loss']:.4f}  "
        f"val_accuracy {m['val_accuracy']:.4f}  val_f1 {m['val_f1']:.4f}  lr {m['lr']:.2e}  "
        f"{m['train_samples_per_s']:,.0f} samples/s"
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
