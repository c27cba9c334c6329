"""A model of text (data.text_column) cuts each batch to its longest text: training samples/s, cut ÷ uncut.

    python benchmarks/text_batches.py                          # about 2 minutes on 2 CPU cores
    python benchmarks/text_batches.py --num-texts 300 --repeats 1   # quick

The texts are lines of this Python's standard library source (25 bytes or more, as found on any machine),
encoded at data.text_bytes (default 256) as training encodes them. For a GRU and a Transformer, one epoch
of engine.train_epoch on one thread, with the model reading each batch cut to its longest text (what it
does) and at the full text_bytes (what it did before: the same answers, see tests/unit/test_models.py),
interleaved `repeats` times in this one process; the medians are compared. Prints one JSON line last with
`gru_speedup` and `transformer_speedup`.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sysconfig
import time
from pathlib import Path

import numpy as np
import torch

from orchestrator import byte_text, engine
from orchestrator.config import OptimConfig, RNNConfig, TransformerConfig
from orchestrator.models import build_model


def stdlib_lines(n: int, seed: int) -> list[str]:
    lines = []
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        lines += [line.strip() for line in path.read_text(errors="replace").splitlines() if len(line.strip()) >= 25]
    random.Random(seed).shuffle(lines)
    return lines[:n]


def samples_per_s(cfg, x: torch.Tensor, y: torch.Tensor, cut: bool, batch_size: int) -> float:
    torch.manual_seed(0)
    model = build_model(cfg, x.shape[1:], 4, input_dtype="int64")
    model.body.cut = cut  # the switch this benchmark measures (models._TextBody)
    optim = OptimConfig(name="adamw", lr=0.003, schedule="constant")
    optimizer = engine.make_optimizer(model, optim)
    batches = -(-len(x) // batch_size)
    start = time.perf_counter()
    engine.train_epoch(model, engine.batches_from_tensors(x, y, batch_size), optimizer, optim, 0, 1, batches,
                       torch.device("cpu"))
    return len(x) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-texts", type=int, default=2000)
    parser.add_argument("--text-bytes", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    torch.set_num_threads(1)
    texts = stdlib_lines(args.num_texts, seed=0)
    x = torch.from_numpy(byte_text.encode(texts, args.text_bytes))
    y = torch.from_numpy(np.random.default_rng(0).integers(0, 4, len(texts)))  # speed only: any labels will do
    families = {"gru": RNNConfig(name="rnn", cell="gru", hidden_size=64),
                "transformer": TransformerConfig(name="transformer", d_model=64, num_heads=4)}
    runs = {f"{name}_{mode}": [] for name in families for mode in ("full", "cut")}
    for _ in range(args.repeats):
        for name, cfg in families.items():
            for mode in ("full", "cut"):
                runs[f"{name}_{mode}"].append(round(samples_per_s(cfg, x, y, mode == "cut", args.batch_size), 1))
                print(mode, name, runs[f"{name}_{mode}"][-1], "samples/s", flush=True)
    median = {key: statistics.median(values) for key, values in runs.items()}
    print(json.dumps({
        "benchmark": "text_batches",
        "gru_speedup": round(median["gru_cut"] / median["gru_full"], 3),
        "transformer_speedup": round(median["transformer_cut"] / median["transformer_full"], 3),
        "samples_per_s_median": median,
        "num_texts": len(texts),
        "text_bytes": args.text_bytes,
        "mean_text_bytes": round(float((x != byte_text.PAD).sum(dim=1).float().mean()), 1),
        "texts_cut_share": round(float(np.mean([len(t.encode()) > args.text_bytes for t in texts])), 4),
        "repeats": args.repeats,
        "runs": runs,
    }), flush=True)


if __name__ == "__main__":
    main()
