"""Plain-PyTorch training and evaluation: optimizers, LR schedule, steps, metrics. No Ray here.

The Ray Train adapter (train.py) and benchmarks call these same functions, so what is unit
tested in one process is what runs on every worker.
"""

from __future__ import annotations

import contextlib
import math
from typing import Callable, Iterable

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
    decay, no_decay = decay_split(model)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    if cfg.name == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, betas=tuple(cfg.betas))
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas))
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
) -> dict:
    """One pass over `batches` of (x, y). Returns mean loss and samples seen.

    Gradients are accumulated over cfg.grad_accum_steps micro-batches; with DDP, the
    all-reduce runs only on the last micro-batch of each step (no_sync on the others).
    """
    model.train()
    loss_sum = torch.zeros((), device=device)
    num_samples = 0
    micro = 0
    optimizer.zero_grad(set_to_none=True)
    for i, (x, y) in enumerate(batches):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        micro += 1
        last_micro = micro == cfg.grad_accum_steps
        sync = contextlib.nullcontext() if last_micro or not hasattr(model, "no_sync") else model.no_sync()
        with sync:
            with autocast(device, precision):
                loss = nn.functional.cross_entropy(model(x), y)
            total = loss + cfg.l1 * l1_penalty(model) if cfg.l1 else loss
            total = total / cfg.grad_accum_steps
            (scaler.scale(total) if scaler else total).backward()
        loss_sum += loss.detach() * len(y)
        num_samples += len(y)
        if last_micro:
            lr = lr_at(epoch + min((i + 1) / max(batches_per_epoch, 1), 1.0), cfg, total_epochs)
            _step(model, optimizer, cfg, lr, scaler)
            micro = 0
    if micro:  # a trailing partial accumulation still updates the weights
        _step(model, optimizer, cfg, lr_at(epoch + 1, cfg, total_epochs), scaler)
    return {"loss": (loss_sum / max(num_samples, 1)).item(), "num_samples": num_samples}


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
    """Sufficient statistics of one pass: confusion matrix, summed loss, count (reducible across workers)."""
    model.eval()
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        with autocast(device, precision):
            logits = model(x)
        loss_sum += nn.functional.cross_entropy(logits.float(), y, reduction="sum").double()
        pred = logits.argmax(dim=1)
        confusion += torch.bincount(y * num_classes + pred, minlength=num_classes**2).reshape(num_classes, num_classes)
    return {"confusion": confusion, "loss_sum": loss_sum}


def metrics_from_stats(stats: dict[str, torch.Tensor], prefix: str = "") -> dict[str, float]:
    """Loss, accuracy and macro precision/recall/F1 from a confusion matrix (rows: truth, cols: prediction)."""
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
    return {prefix + k: v for k, v in out.items()}


def per_class(confusion: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Precision, recall and F1 of each class from a confusion matrix (rows: truth, cols: prediction)."""
    cm = confusion.double().cpu()
    tp = cm.diag()
    precision = torch.where(cm.sum(0) > 0, tp / cm.sum(0).clamp(min=1), torch.zeros_like(tp))
    recall = torch.where(cm.sum(1) > 0, tp / cm.sum(1).clamp(min=1), torch.zeros_like(tp))
    f1 = torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall).clamp(min=1e-12), 0.0)
    return precision, recall, f1


def batches_from_tensors(
    x: torch.Tensor, y: torch.Tensor, batch_size: int, generator: torch.Generator | None = None, transform: Callable | None = None
):
    """(x, y) batches in a seeded random order (or in order when generator is None)."""
    order = torch.randperm(len(y), generator=generator) if generator is not None else torch.arange(len(y))
    for start in range(0, len(y), batch_size):
        idx = order[start : start + batch_size]
        xb = x[idx]
        yield (transform(xb) if transform else xb), y[idx]
