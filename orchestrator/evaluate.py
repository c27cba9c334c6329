"""Evaluate a checkpoint on a split of the data it was trained on, in the driver process.

    orchestrator evaluate runs/digits-cnn-.../epoch-0020 --split test
"""

from __future__ import annotations

import sys

import torch

from orchestrator import data, engine
from orchestrator.checkpoint import read_checkpoint
from orchestrator.lm import GPT


def evaluate_model(model: torch.nn.Module, dataset, num_classes: int, batch_size: int,
                   with_confusion: bool = False) -> dict:
    """Loss, accuracy, macro precision/recall/F1 (a language model: per next byte, and perplexity and
    bits per byte) of `model` on a Ray Dataset with columns x, y (and "confusion", rows truth and
    columns prediction, if asked)."""
    batches = ((b["x"], b["y"]) for b in dataset.iter_torch_batches(batch_size=batch_size))
    stats = engine.evaluate(model, batches, num_classes, torch.device("cpu"))
    metrics = engine.metrics_from_stats(stats, language_model=isinstance(model, GPT))
    return {**metrics, "confusion": stats["confusion"].tolist()} if with_confusion else metrics


def evaluate_checkpoint(uri: str, split: str = "test", address: str | None = None) -> dict:
    """Metrics of a checkpoint on `split`, rebuilt from its own config (same seed, same split)."""
    from orchestrator.runtime import ray_session

    ckpt = read_checkpoint(uri)  # an S3-compatible endpoint comes from AWS_ENDPOINT_URL
    cfg = ckpt.config
    with ray_session(address):
        splits = data.load_splits(cfg.data, cfg.seed, cfg.storage.endpoint_url)
        if splits.fingerprint != ckpt.model_info["data_fingerprint"]:
            print(f"warning: the data differs from what {uri} was trained on (fingerprint changed)", file=sys.stderr)
        metrics = evaluate_model(ckpt.model(), getattr(splits, split), len(splits.label_names), cfg.train.eval_batch_size)
    return {
        "checkpoint": uri,
        "split": split,
        "num_rows": splits.num_rows[split],
        "metrics": {f"{split}_{k}": v for k, v in metrics.items()},
    }

