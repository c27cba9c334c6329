"""Ray Train overhead: steady-state samples/s of a 1-worker TorchTrainer ÷ a plain PyTorch loop.

    python benchmarks/train_overhead.py            # about 3 minutes on 2 CPU cores
    python benchmarks/train_overhead.py --epochs 3 --num-samples 4000 --repeats 1   # quick

Same model, data, batch size, shuffling and thread count; both measured in this one run.
Throughput on this 2-core VM varies up to ~25% from one process to the next (not from epoch
to epoch), so one run of each is one noisy sample: the benchmark interleaves plain and Ray
runs on one Ray cluster (plain, Ray, plain, ..., plain), each plain run in a fresh process
with the OMP_NUM_THREADS a Ray worker gets, and compares medians. Within a run the first
epoch is warm-up and excluded. Start-up (train() to the first step) is reported separately.
Prints one JSON line last with "ratio" (goal >= 0.95).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch

from orchestrator import data, engine, splits
from orchestrator.checkpoint import read_checkpoint
from orchestrator.config import config_from_dict
from orchestrator.models import build_model


def experiment(args, storage_path: str):
    return config_from_dict({
        "name": "bench-overhead",
        "seed": 0,
        "data": {"name": "synthetic", "num_samples": args.num_samples, "feature_shape": [64], "num_classes": 10},
        "model": {"name": "mlp", "hidden_sizes": [512, 512], "dropout": 0.1},
        "optim": {"name": "adamw", "lr": 1e-3, "schedule": "cosine"},
        "train": {"epochs": args.epochs, "num_workers": 1, "cpus_per_worker": args.threads,
                  "batch_size_per_worker": args.batch_size, "num_to_keep": 1},
        "storage": {"path": storage_path},
    })


def plain_loop(cfg) -> tuple[list[float], int]:
    """samples/s of each epoch of the same training in this process, no Ray; and the sample count."""
    arrays = data.load_arrays(cfg.data, cfg.seed)
    tr, _, _ = splits.split_indices(arrays.y, cfg.data.val_fraction, cfg.data.test_fraction, cfg.seed)
    x, y = torch.from_numpy(arrays.x[tr]).clone(), torch.from_numpy(arrays.y[tr]).clone()
    mean, std = data.channel_stats(arrays.x[tr])
    torch.set_num_threads(int(cfg.train.cpus_per_worker))
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, list(x.shape[1:]), 10, mean, std)
    opt = engine.make_optimizer(model, cfg.optim)
    t = cfg.train
    rates = []
    for epoch in range(t.epochs):
        gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch * 1_009)
        batches = engine.batches_from_tensors(x, y, t.batch_size_per_worker, gen)
        tick = time.perf_counter()
        stats = engine.train_epoch(model, batches, opt, cfg.optim, epoch, t.epochs, -(-len(y) // t.batch_size_per_worker),
                                   torch.device("cpu"))
        rates.append(stats["num_samples"] / (time.perf_counter() - tick))
    return rates, len(y)


def plain_in_fresh_process(args) -> tuple[float, int]:
    cmd = [sys.executable, __file__, "--plain-only", "--epochs", str(args.epochs), "--num-samples", str(args.num_samples),
           "--batch-size", str(args.batch_size), "--threads", str(args.threads)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}  # as Ray sets it for a worker
    out = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout.splitlines()[-1])
    return out["rates"], out["num_train"]


def steady(rates: list[float]) -> float:
    """Median epoch rate after the warm-up epoch: robust to one epoch slowed by a noisy neighbour."""
    return statistics.median(rates[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--num-samples", type=int, default=30_000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="Ray runs; plain runs are one more, interleaved")
    parser.add_argument("--plain-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plain_only:
        rates, num_train = plain_loop(experiment(args, tempfile.gettempdir()))
        print(json.dumps({"rates": rates, "num_train": num_train}))
        return

    from orchestrator.runtime import ray_session
    from orchestrator.train import train

    plain_runs, ray_runs, startups = [], [], []
    began = time.time()
    with tempfile.TemporaryDirectory() as tmp, ray_session():
        cluster_start_s = time.time() - began
        for i in range(args.repeats + 1):  # plain, Ray, plain, ..., plain: drift hits both sides alike
            print(f"plain PyTorch, run {i + 1} ...", flush=True)
            rates, num_train = plain_in_fresh_process(args)
            plain_runs.append(rates)
            if i == args.repeats:
                break
            print(f"Ray Train (1 worker), run {i + 1} ...", flush=True)
            cfg = experiment(args, tmp).model_copy(deep=True)
            cfg.train.run_name = f"overhead-{i}"
            started = time.time()
            result = train(cfg)
            history = read_checkpoint(os.path.join(result.run_uri, f"epoch-{args.epochs:04d}")).train_state()["history"]
            ray_runs.append([h["train_samples_per_s"] for h in history])
            # start-up: from calling train() to the first training step (end of epoch 1 minus its training time)
            startups.append(history[0]["finished_at"] - started - num_train / ray_runs[-1][0])

    plain = statistics.median(steady(r) for r in plain_runs)
    ray_steady = statistics.median(steady(r) for r in ray_runs)
    out = {
        "benchmark": "train_overhead",
        "ratio": round(ray_steady / plain, 4),
        "ray_samples_per_s": round(ray_steady, 1),
        "plain_samples_per_s": round(plain, 1),
        "ray_runs_samples_per_s": [round(steady(r), 1) for r in ray_runs],
        "plain_runs_samples_per_s": [round(steady(r), 1) for r in plain_runs],
        "ray_fit_startup_s": round(statistics.median(startups), 1),
        "ray_cluster_start_s": round(cluster_start_s, 1),
        "epochs": args.epochs,
        "warmup_epochs_excluded": 1,
        "num_train_samples": num_train,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "torch": torch.__version__,
    }
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
