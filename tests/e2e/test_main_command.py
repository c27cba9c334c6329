"""The README's main command as users run it: a subprocess with its own embedded Ray."""

import json
import os
import queue
import subprocess
import sys
import threading
import time
import uuid

import pytest

from tests.conftest import ROOT, kill_marked

pytestmark = pytest.mark.e2e


def cli(*args, marker: str, timeout=420):
    env = {**os.environ, "ORCHESTRATOR_TEST_MARKER": marker, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "orchestrator.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)


def finish(proc, marker, timeout=420) -> tuple[int, list[str]]:
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        kill_marked(marker)
    return proc.returncode, out.splitlines()


def test_train_digits_cnn_then_evaluate_reproduces(tmp_path):
    marker = f"e2e-{uuid.uuid4().hex[:8]}"
    started = time.time()
    code, lines = finish(cli("train", "jobs/digits-cnn.yaml", f"storage.path={tmp_path}", "--json", marker=marker), marker)
    wall = time.time() - started
    assert code == 0, "\n".join(lines[-30:])
    result = json.loads(lines[-1])
    print(f"digits-cnn: {wall:.0f}s wall, test_accuracy {result['metrics']['test_accuracy']:.4f}")
    assert result["metrics"]["test_accuracy"] >= 0.97 and "test_f1" in result["metrics"]
    assert sum("epoch " in line and "val_accuracy" in line for line in lines) == 25  # progress, every epoch

    code, lines = finish(cli("evaluate", result["checkpoint"], "--json", marker=marker), marker)
    assert code == 0, "\n".join(lines[-30:])
    assert json.loads(lines[-1])["metrics"]["test_accuracy"] == result["metrics"]["test_accuracy"]


def test_killed_driver_resumes_from_its_last_checkpoint(tmp_path):
    marker = f"e2e-{uuid.uuid4().hex[:8]}"
    args = ["train", "jobs/digits-mlp.yaml", f"storage.path={tmp_path}", "train.run_name=killed", "train.epochs=8"]
    proc = cli(*args, marker=marker)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    deadline = time.time() + 300
    seen = ""
    while "epoch   4/8" not in seen and time.time() < deadline and proc.poll() is None:
        try:
            seen = lines.get(timeout=1)
        except queue.Empty:
            pass
    assert "epoch   4/8" in seen, "training never reached epoch 4"
    kill_marked(marker)  # the driver and its embedded Ray, mid-run
    proc.wait(timeout=30)

    code, out = finish(cli(*args, "--json", marker=marker), marker)
    assert code == 0, "\n".join(out[-30:])
    result = json.loads(out[-1])
    # resumed, not restarted; Ray persists a checkpoint a moment after report() returns, so the
    # last epoch or two before the kill may not be registered yet
    assert 1 <= result["start_epoch"] <= 4, result["start_epoch"]
    assert any(f"resuming killed after epoch {result['start_epoch']}" in line for line in out)
    assert not any("epoch   1/8" in line for line in out)
