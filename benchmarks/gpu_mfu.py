"""GPT training throughput and MFU: a plain PyTorch step ÷ the same step in Ray Train, one call.

    python benchmarks/gpu_mfu.py                  # on a GPU: GPT-2 small (12 layers, d=768, T=1024), bf16
    python benchmarks/gpu_mfu.py --shape tiny     # CPU-sized, so CI runs the code

MFU = tokens/s × training FLOPs per token (6N + 12·L·d·T, orchestrator.lm.flops_per_token)
÷ the peak: 790 TFLOP/s, the bf16 dense peak measured on an H100 (--peak-tflops to change).
Both sides run the same step on random bytes (the data path is not measured here): bf16
autocast, TF32 matmuls and fused AdamW on GPU, torch.compile unless --no-compile. The plain
run goes first, in this process; then a 1-worker TorchTrainer (use_gpu on GPU) runs it in a
Ray worker and reports its own tokens/s. Warm-up steps (compilation included) are excluded.
Prints one JSON line last with device, tokens_per_s, mfu and ray_vs_plain.
"""

from __future__ import annotations

import argparse
import json
import tempfile

import torch

from orchestrator.lm import step_throughput

SHAPES = {
    "gpt2-small": {"n_layer": 12, "n_head": 12, "d_model": 768, "block_size": 1024},
    "tiny": {"n_layer": 2, "n_head": 2, "d_model": 64, "block_size": 64},
}


def in_ray_train(config: dict) -> dict:
    import ray.train
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    def loop(cfg):
        with tempfile.TemporaryDirectory() as empty:  # Ray Train 2.60 keeps the metrics of checkpointed reports only
            ray.train.report(step_throughput(cfg), checkpoint=ray.train.Checkpoint.from_directory(empty))

    with tempfile.TemporaryDirectory() as tmp:
        trainer = TorchTrainer(
            loop, train_loop_config=config,
            scaling_config=ScalingConfig(num_workers=1, use_gpu=torch.cuda.is_available()),
            run_config=RunConfig(name="gpu-mfu", storage_path=tmp),
        )
        return trainer.fit().metrics


def at_least(low: float, kind=int):
    """An argparse type: a number >= low, else exit 2 with the reason."""
    def parse(text: str):
        value = kind(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {text}")
        return value
    parse.__name__ = kind.__name__  # argparse names it in "invalid int value"
    return parse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", choices=SHAPES, default=None, help="default: gpt2-small on GPU, tiny on CPU")
    parser.add_argument("--batch-size", type=at_least(1), default=None, help="sequences per step (default 16 GPU, 8 CPU)")
    parser.add_argument("--steps", type=at_least(1), default=None, help="measured steps (default 50 GPU, 10 CPU)")
    parser.add_argument("--warmup", type=at_least(0), default=None, help="unmeasured first steps (default 10 GPU, 3 CPU)")
    parser.add_argument("--no-compile", action="store_true", help="eager mode (compile is on by default on GPU)")
    parser.add_argument("--peak-tflops", type=at_least(1e-9, float), default=790.0, help="the device's peak, TFLOP/s")
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    config = {
        "shape": SHAPES[args.shape or ("gpt2-small" if cuda else "tiny")],
        "batch_size": args.batch_size or (16 if cuda else 8),
        "steps": args.steps or (50 if cuda else 10),
        "warmup": args.warmup if args.warmup is not None else (10 if cuda else 3),
        "compile": cuda and not args.no_compile,  # compiling on a 2-core CPU costs minutes for nothing
        "cpu_threads": 1,  # a 1-worker TorchTrainer's CPU
    }

    print(f"plain PyTorch: {config}", flush=True)
    plain = step_throughput(config)
    print(f"plain: {plain['tokens_per_s']:,.0f} tokens/s; now in Ray Train (1 worker) ...", flush=True)

    from orchestrator.runtime import ray_session

    with ray_session():
        wrapped = in_ray_train(config)
    mfu = lambda r: r["tokens_per_s"] * r["flops_per_token"] / (args.peak_tflops * 1e12)
    print(json.dumps({
        "benchmark": "gpu_mfu",
        "device": plain["device"],
        "tokens_per_s": round(plain["tokens_per_s"], 1),
        "mfu": round(mfu(plain), 6),
        "ray_tokens_per_s": round(wrapped["tokens_per_s"], 1),
        "ray_mfu": round(mfu(wrapped), 6),
        "ray_vs_plain": round(wrapped["tokens_per_s"] / plain["tokens_per_s"], 4),
        "flops_per_token": plain["flops_per_token"],
        "peak_tflops": args.peak_tflops,
        "precision": "bf16" if cuda else "fp32",
        **config,
        "torch": torch.__version__,
    }), flush=True)


if __name__ == "__main__":
    main()
