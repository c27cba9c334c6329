"""Benchmarks run in CI in a quick mode, so their code cannot rot (their figures are not asserted)."""

import json
import os
import subprocess
import sys
import uuid

import pytest

from tests.conftest import ROOT, kill_marked

pytestmark = pytest.mark.e2e


def run_benchmark(script: str, *args: str) -> dict:
    """Run a benchmark as users do; its last line of stdout, parsed."""
    marker = f"bench-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "ORCHESTRATOR_TEST_MARKER": marker}
    try:
        proc = subprocess.run([sys.executable, script, *args], capture_output=True, text=True, timeout=300, env=env,
                              cwd=ROOT)
    finally:
        kill_marked(marker)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.splitlines()[-1])
    print({k: v for k, v in out.items() if k != "runs"})
    return out


def test_train_overhead_quick_mode_prints_a_ratio():
    out = run_benchmark("benchmarks/train_overhead.py", "--epochs", "3", "--num-samples", "3000", "--repeats", "1")
    assert out["ratio"] > 0 and len(out["plain_runs_samples_per_s"]) == 2 and out["ray_fit_startup_s"] > 0


def test_tune_efficiency_quick_mode_prints_its_ratios_and_replays_its_curves(tmp_path):
    out = run_benchmark("benchmarks/tune_efficiency.py", "--seeds", "1", "--first-seed", "3", "--num-samples", "3",
                        "--max-epochs", "2")
    assert {"time_to_target_ratio", "trial_epochs_ratio", "tune_overhead"} <= set(out) and out["tune_overhead"] > 0
    assert len(out["runs"]["asha"]) == len(out["runs"]["fifo"]) == 1
    assert out["first_seed"] == out["runs"]["asha"][0]["seed"] == out["runs"]["fifo"][0]["seed"] == 3
    assert [len(c) for c in out["runs"]["fifo"][0]["curves"]] == [2, 2, 2]  # every FIFO trial runs every epoch
    assert out["first_report_s_median"] > 0
    results = tmp_path / "tune_efficiency.json"
    results.write_text(json.dumps(out) + "\n")
    replayed = run_benchmark("benchmarks/tune_replay.py", str(results), "--draws", "20")
    assert replayed["configurations"] == 3 and replayed["clock"]["first_report"] == out["first_report_s_median"]


def test_serve_throughput_quick_mode_prints_its_ratios():
    # behind Serve's Python proxy (macOS, or RAY_SERVE_ENABLE_HA_PROXY=0): every other Serve test runs behind HAProxy
    out = run_benchmark("benchmarks/serve_throughput.py", "--duration", "1", "--warmup", "0.5", "--serve-proxy")
    assert out["ingress"] == "proxy" and out["serve_vs_uvicorn"] > 0 and out["batching_gain"] > 0
    assert {str(k) for k in out["serve_unbatched"]["statuses"]} == {"200"}
    assert set(out["latency_ms"]) == {"1", "8", "64"} and all(v["p99"] >= v["p50"] for v in out["latency_ms"].values())
    for baseline in ("uvicorn", "uvicorn_without_access_log"):  # with uvicorn's access log, as Serve keeps one
        assert set(out[baseline]["statuses"]) == {"200"}  # JSON keys
    assert out["serve_vs_uvicorn_without_access_log"] > 0
    alone = out["model_alone"]  # batching a forward pass costs less per input than one input alone
    assert alone["batch_1_ms"] > alone["per_input_in_batch_32_ms"] > 0 and alone["batching_bound"] > 1


def test_gpu_mfu_runs_its_tiny_shape_on_cpu():
    out = run_benchmark("benchmarks/gpu_mfu.py", "--steps", "5", "--warmup", "2", "--clients", "2", "--new-tokens", "2",
                        "--serve-seconds", "1")
    assert out["device"] == "cpu" and out["shape"]["n_layer"] == 2
    assert out["tokens_per_s"] > 0 and out["ray_tokens_per_s"] > 0 and 0 < out["mfu"] < 1 and out["ray_vs_plain"] > 0
    for mode in ("batched", "unbatched"):  # every generate request answered, some bytes generated
        assert set(out["serve_generate"][mode]["statuses"]) == {"200"} and out["serve_generate"][mode]["bytes_per_s"] > 0
    assert out["serve_batching_gain"] > 0


def test_text_batches_quick_mode_prints_its_speedups():
    out = run_benchmark("benchmarks/text_batches.py", "--num-texts", "200", "--repeats", "1")
    assert out["gru_speedup"] > 0 and out["transformer_speedup"] > 0 and out["num_texts"] == 200
    assert 25 <= out["mean_text_bytes"] <= out["text_bytes"]  # lines of 25 bytes or more, padded to text_bytes
