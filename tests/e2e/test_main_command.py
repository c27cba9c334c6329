"""The README's main command as users run it: a subprocess with its own embedded Ray."""

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import ROOT, free_port, http, kill_marked

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


@pytest.fixture(scope="module")
def cnn_run(tmp_path_factory):
    """The main command, once: (exit code, output lines, wall seconds)."""
    marker = f"e2e-{uuid.uuid4().hex[:8]}"
    started = time.time()
    tmp = tmp_path_factory.mktemp("main")
    code, lines = finish(cli("train", "jobs/digits-cnn.yaml", f"storage.path={tmp}", "--json", marker=marker), marker)
    return code, lines, time.time() - started


def test_train_digits_cnn_then_evaluate_reproduces(cnn_run):
    marker = f"e2e-{uuid.uuid4().hex[:8]}"
    code, lines, wall = cnn_run
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


def read_until(proc, needle: str, timeout_s: float) -> str:
    """Lines of a running process until one contains needle (bounded); that line."""
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    deadline = time.time() + timeout_s
    while time.time() < deadline and proc.poll() is None:
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            continue
        if needle in line:
            return line
    raise AssertionError(f"{needle!r} never appeared (exit code {proc.poll()})")


def write_inputs(path, n=6):
    x = np.random.default_rng(1).uniform(0, 16, size=(n, 1, 8, 8)).round(2).tolist()
    path.write_text(json.dumps({"instances": x}))
    return str(path)


def test_serve_cli_answers_as_offline_predict_and_stops_on_ctrl_c(cnn_run, tmp_path):
    checkpoint = json.loads(cnn_run[1][-1])["checkpoint"]
    marker = f"e2e-{uuid.uuid4().hex[:8]}"
    inputs = write_inputs(tmp_path / "in.json")
    proc = cli("serve", checkpoint, "--port", str(free_port()), marker=marker)
    try:
        line = read_until(proc, "serving ", 240)
        url = line.split(" at ")[1].split()[0]
        code, remote = finish(cli("predict", url, "--input", inputs, "--json", marker=marker), marker + "-x")
        assert code == 0, remote[-10:]
        code, local = finish(cli("predict", checkpoint, "--input", inputs, "--json", marker=marker), marker + "-x")
        assert code == 0, local[-10:]
        remote, local = json.loads(remote[-1]), json.loads(local[-1])
        assert [p["label"] for p in remote["predictions"]] == [p["label"] for p in local["predictions"]]
        np.testing.assert_allclose([p["probabilities"] for p in remote["predictions"]],
                                   [p["probabilities"] for p in local["predictions"]], atol=1e-6)
        (tmp_path / "bad.json").write_text('{"instances": [[1, 2, 3]]}')
        code, out = finish(cli("predict", url, "--input", str(tmp_path / "bad.json"), marker=marker), marker + "-x")
        assert code == 2 and "422" in out[-1] and "shape [1, 8, 8]" in out[-1] and "Traceback" not in "".join(out)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
    finally:
        kill_marked(marker)


def test_rays_own_serve_run_brings_up_deploy_serve_yaml(cnn_run, tmp_path):
    checkpoint = json.loads(cnn_run[1][-1])["checkpoint"]
    config = yaml.safe_load((ROOT / "deploy" / "serve.yaml").read_text())
    port = free_port()
    config["http_options"]["port"] = port
    config["applications"][0]["args"]["checkpoint"] = checkpoint
    (tmp_path / "serve.yaml").write_text(yaml.safe_dump(config))
    marker = f"e2e-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "ORCHESTRATOR_TEST_MARKER": marker}
    serve_cli = str(Path(sys.executable).parent / "serve")
    proc = subprocess.Popen([serve_cli, "run", str(tmp_path / "serve.yaml")], env=env, cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline, ready = time.time() + 240, None
        while time.time() < deadline and proc.poll() is None and not ready:
            try:
                ready = http("GET", f"http://127.0.0.1:{port}/readyz", timeout=5)[2].get("ready")
            except (OSError, AttributeError):
                time.sleep(1)
        assert ready, f"serve run never became ready (exit code {proc.poll()})"
        body = json.dumps({"instances": np.zeros((2, 1, 8, 8)).tolist()}).encode()
        status, _, answer = http("POST", f"http://127.0.0.1:{port}/v1/predict", body,
                                 {"Content-Type": "application/json"})
        assert status == 200 and len(answer["predictions"]) == 2
        assert http("GET", f"http://127.0.0.1:{port}/v1/model")[2]["checkpoint"] == checkpoint
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        finally:
            kill_marked(marker)
