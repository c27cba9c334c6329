"""Plain-PyTorch training and evaluation: optimizers, LR schedule, steps, metrics. No Ray here.

The Ray Train adapter (train.py) and benchmarks call these same functions, so what is unit
tested in one process is what runs on every worker.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import queue
import threading
import time
import warnings
from typing import Callable, Iterable

import numpy as np
import torch
from torch import nn

from orchestrator.config import OptimConfig


def decay_split(model: nn.Module) -> tuple[list, list]:
    """Weight matrices/kernels (regularized) and biases/norm scales (not regularized)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return decay, no_decay


def make_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """The optimizer, with Adam's fused kernel (one launch for every tensor) on GPU."""
    decay, no_decay = decay_split(model)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    params = decay + no_decay
    fused = (bool(params) and all(p.is_cuda for p in params)) or None
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    if cfg.name == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, betas=tuple(cfg.betas), fused=fused)
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), fused=fused)
    return torch.optim.RMSprop(groups, lr=cfg.lr, momentum=cfg.momentum)


def lr_at(progress_epochs: float, cfg: OptimConfig, total_epochs: int) -> float:
    """Learning rate at a (fractional) epoch: linear warmup, then constant, step or cosine.

    A pure function of progress, so resuming needs no scheduler state.
    """
    if progress_epochs < cfg.warmup_epochs:
        return cfg.lr * progress_epochs / cfg.warmup_epochs
    if cfg.schedule == "constant":
        return cfg.lr
    if cfg.schedule == "step":
        return cfg.lr * cfg.gamma ** int(progress_epochs // cfg.step_size_epochs)
    span = max(total_epochs - cfg.warmup_epochs, 1e-9)
    t = min((progress_epochs - cfg.warmup_epochs) / span, 1.0)
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + (cfg.lr - floor) * 0.5 * (1 + math.cos(math.pi * t))


def l1_penalty(model: nn.Module) -> torch.Tensor:
    return sum(p.abs().sum() for p in decay_split(model)[0])


def autocast(device: torch.device, precision: str):
    """bf16/fp16 autocast on GPU; fp32 (no autocast) otherwise."""
    if device.type != "cuda" or precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def cross_entropy(logits: torch.Tensor, y: torch.Tensor, reduction: str = "mean",
                  weight: torch.Tensor | None = None) -> torch.Tensor:
    """Classifier logits [B, C] against labels [B], or language-model logits [B, T, V] against the
    next tokens [B, T] (every position counts). `weight`: per class; the mean is then weighted."""
    return nn.functional.cross_entropy(logits.float().flatten(0, -2), y.flatten(), weight=weight, reduction=reduction)


def balanced_class_weights(class_counts: list[int]) -> torch.Tensor:
    """rows / (classes x rows of the class), scikit-learn's 'balanced': every class weighs the same in all. A
    class with no training row gets 0 (it never appears in the loss anyway)."""
    counts = torch.tensor(class_counts, dtype=torch.float32)
    present = counts > 0
    weights = torch.zeros_like(counts)
    weights[present] = counts.sum() / (int(present.sum()) * counts[present])
    return weights


def gradient_sync(model: nn.Module, enabled: bool):
    """Skip the gradient all-reduce (DDP) or reduce-scatter (FSDP2) on micro-batches that only accumulate."""
    if enabled:
        return contextlib.nullcontext()
    if hasattr(model, "no_sync"):  # DDP
        return model.no_sync()
    if hasattr(model, "set_requires_gradient_sync"):  # FSDP2
        return _fsdp_no_sync(model)
    return contextlib.nullcontext()


@contextlib.contextmanager
def _fsdp_no_sync(model):
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)


def train_epoch(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    cfg: OptimConfig,
    epoch: int,
    total_epochs: int,
    batches_per_epoch: int,
    device: torch.device,
    precision: str = "fp32",
    scaler: torch.amp.GradScaler | None = None,
    class_weight: torch.Tensor | None = None,
) -> dict:
    """One pass over `batches` of (x, y). Returns the mean loss (per label or per token; weighted by
    `class_weight` when given), the samples seen, and the seconds spent waiting for batches (what
    prefetching should make small).

    Gradients are accumulated over cfg.grad_accum_steps micro-batches; with DDP or FSDP, the
    gradient reduction runs only on the last micro-batch of each step.
    """
    model.train()
    loss_sum = torch.zeros((), device=device)
    num_samples = num_targets = 0
    micro = 0
    optimizer.zero_grad(set_to_none=True)
    data_wait_s = 0.0
    batches = iter(batches)
    for i in itertools.count():
        tick = time.perf_counter()
        batch = next(batches, None)
        data_wait_s += time.perf_counter() - tick
        if batch is None:
            break
        x, y = batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)
        micro += 1
        last_micro = micro == cfg.grad_accum_steps
        with gradient_sync(model, last_micro):
            with autocast(device, precision):
                loss = cross_entropy(model(x), y, weight=class_weight)
            total = loss + cfg.l1 * l1_penalty(model) if cfg.l1 else loss
            total = total / cfg.grad_accum_steps
            (scaler.scale(total) if scaler else total).backward()
        loss_sum += loss.detach() * y.numel()
        num_samples += len(y)
        num_targets += y.numel()
        if last_micro:
            lr = lr_at(epoch + min((i + 1) / max(batches_per_epoch, 1), 1.0), cfg, total_epochs)
            _step(model, optimizer, cfg, lr, scaler)
            micro = 0
    if micro:  # a trailing partial accumulation still updates the weights
        _step(model, optimizer, cfg, lr_at(epoch + 1, cfg, total_epochs), scaler)
    return {"loss": (loss_sum / max(num_targets, 1)).item(), "num_samples": num_samples, "data_wait_s": data_wait_s}


def shard_model(model: nn.Module, device: torch.device) -> nn.Module:
    """FSDP2: each worker keeps 1/world of every parameter, gradient and optimizer state, and gathers
    one block's full weights just in time for its forward and backward. Blocks (a Transformer's
    `blocks`) are sharded one by one so only one is whole at a time; the rest goes with the root."""
    from torch.distributed.fsdp import fully_shard

    model = model.to(device)
    for block in getattr(model, "blocks", []):
        fully_shard(block)
    return fully_shard(model)


def prefetch(batches: Iterable[tuple[torch.Tensor, torch.Tensor]], device: torch.device, depth: int):
    """On GPU, a thread assembles the next `depth` batches in pinned (page-locked) memory while the
    current one trains, and each is copied to the GPU without blocking. Elsewhere, the batches as they are."""
    if device.type != "cuda" or depth == 0:
        yield from batches
        return
    ready: queue.Queue = queue.Queue(maxsize=depth)

    def fill():
        try:
            for x, y in batches:
                ready.put((x.pin_memory(), y.pin_memory()))
            ready.put(None)
        except BaseException as e:  # noqa: BLE001 (handed to the consumer, which raises it)
            ready.put(e)

    threading.Thread(target=fill, daemon=True, name="prefetch").start()
    while (item := ready.get()) is not None:
        if isinstance(item, BaseException):
            raise item
        yield item[0].to(device, non_blocking=True), item[1].to(device, non_blocking=True)


def _step(model, optimizer, cfg: OptimConfig, lr: float, scaler):
    for group in optimizer.param_groups:
        group["lr"] = lr
    if scaler:
        scaler.unscale_(optimizer)
    if cfg.grad_clip_norm:
        nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip_norm)
    if scaler:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)


@torch.no_grad()
def evaluate(
    model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], num_classes: int, device, precision="fp32"
) -> dict[str, torch.Tensor]:
    """Sufficient statistics of one pass: confusion matrix, summed loss, count (reducible across workers).
    A language model counts every position of every sequence."""
    model.eval()
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        with autocast(device, precision):
            logits = model(x)
        loss_sum += cross_entropy(logits, y, reduction="sum").double()
        pred = logits.argmax(dim=-1)
        confusion += torch.bincount((y * num_classes + pred).flatten(), minlength=num_classes**2).reshape(num_classes,
                                                                                                           num_classes)
    return {"confusion": confusion, "loss_sum": loss_sum}


def metrics_from_stats(stats: dict[str, torch.Tensor], prefix: str = "", language_model: bool = False) -> dict[str, float]:
    """Loss, accuracy and macro precision/recall/F1 from a confusion matrix (rows: truth, cols: prediction);
    for a language model also perplexity (e^loss) and bits per byte (loss / ln 2): the loss is nats per byte."""
    cm = stats["confusion"].double().cpu()
    n, tp = cm.sum(), cm.diag()
    precision, recall, f1 = per_class(cm)
    present = cm.sum(1) > 0  # macro average over classes that occur in this split
    out = {
        "loss": (stats["loss_sum"].cpu() / n.clamp(min=1)).item(),
        "accuracy": (tp.sum() / n.clamp(min=1)).item(),
        "precision": precision[present].mean().item(),
        "recall": recall[present].mean().item(),
        "f1": f1[present].mean().item(),
    }
    if language_model:
        out["perplexity"] = math.exp(min(out["loss"], 700.0))  # e^700 is near float64's limit
        out["bits_per_byte"] = out["loss"] / math.log(2)
    return {prefix + k: v for k, v in out.items()}


def per_class(confusion: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Precision, recall and F1 of each class from a confusion matrix (rows: truth, cols: prediction)."""
    cm = confusion.double().cpu()
    tp = cm.diag()
    precision = torch.where(cm.sum(0) > 0, tp / cm.sum(0).clamp(min=1), torch.zeros_like(tp))
    recall = torch.where(cm.sum(1) > 0, tp / cm.sum(1).clamp(min=1), torch.zeros_like(tp))
    f1 = torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall).clamp(min=1e-12), 0.0)
    return precision, recall, f1


def worker_share(x: np.ndarray, y: np.ndarray, rank: int, world: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A worker's rows of a split, as tensors: every world-th row from its rank, as many on every worker
    (DDP and FSDP workers step together: one batch more on one worker would hang the others)."""
    n = len(y) // world
    return as_tensors(np.ascontiguousarray(x[rank::world][:n]), np.ascontiguousarray(y[rank::world][:n]))


def as_tensors(x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Tensors sharing the arrays' memory, also when they are read-only (from Ray's object store: the
    loop never writes its data)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(x), torch.from_numpy(y)


def batches_from_tensors(
    x: torch.Tensor, y: torch.Tensor, batch_size: int, generator: torch.Generator | None = None, transform: Callable | None = None
):
    """(x, y) batches in a seeded random order (or in order when generator is None)."""
    order = torch.randperm(len(y), generator=generator) if generator is not None else torch.arange(len(y))
    for start in range(0, len(y), batch_size):
        idx = order[start : start + batch_size]
        xb = x[idx]
        yield (transform(xb) if transform else xb), y[idx]
