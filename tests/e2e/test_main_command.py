"""The README's main command as users run it: a subprocess with its own embedded Ray."""

import http.client as http_client
import json
import os
import queue
import re
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

from orchestrator.config import StorageConfig
from orchestrator.train import newest_checkpoint
from tests.conftest import ROOT, free_port, http, kill_marked

pytestmark = pytest.mark.e2e


def cli(*args, marker: str, timeout=420):
    # a user's shell has no RAY_DEDUP_LOGS (the session's Ray fixture sets it)
    env = {**{k: v for k, v in os.environ.items() if k != "RAY_DEDUP_LOGS"}, "ORCHESTRATOR_TEST_MARKER": marker,
           "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "orchestrator.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)


def finish(proc, marker, timeout=420) -> tuple[int, list[str]]:
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        kill_marked(marker)
    return proc.returncode, out.splitlines()


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """The README's main job, serving until Ctrl-C: what it printed, and what its endpoint and the
    registry answered while it served. One Ray at a time on 2 cores, so it stops before the tests."""
    marker = f"e2e-{uuid.uuid4().hex[:8]}"
    storage_path = tmp_path_factory.mktemp("pipeline")
    started = time.time()
    proc = cli("run", "jobs/digits.yaml", f"storage.path={storage_path}", "--port", str(free_port()), "--json",
               marker=marker)
    try:
        line = read_until(proc, '"model_version": ', 600)  # the --json line: its keys sorted, whichever is first
        wall = time.time() - started
        result = json.loads(line)
        model = http("GET", f"{result['endpoint']}/v1/model")[2]
        code, listed = finish(cli("models", "list", "--registry", result["registry"], "--json", marker=marker + "-x"),
                              marker + "-x")
        assert code == 0, listed[-10:]
        proc.send_signal(signal.SIGINT)
        exit_code = wait_exit(proc, 60)
    finally:
        kill_marked(marker)
    return {"result": result, "wall": wall, "model": model, "models": json.loads(listed[-1]), "exit_code": exit_code,
            "storage": storage_path, "printed": "".join(proc.seen)}


def test_run_tunes_trains_registers_serves_and_smoke_tests_digits(pipeline):
    r = pipeline["result"]
    print(f"digits pipeline: {pipeline['wall']:.0f}s to the smoke answer, test_accuracy {r['metrics']['test_accuracy']:.4f}")
    assert r["metrics"]["test_accuracy"] >= 0.97 and r["search"]["num_trials"] == 8
    assert r["model_version"] == r["registered_version"] == 1 and r["promotion"]["promoted"]
    assert {"config_hash", "data_fingerprint", "code_version"} <= set(r["lineage"])
    assert r["lineage"]["search"] == r["search"]["experiment"]  # the final run knows the search that chose its config
    smoke = r["smoke"]
    assert smoke["status"] == 200 and len(smoke["response"]["predictions"]) == 4 and smoke["correct"] >= 3
    assert len(set(smoke["expected_labels"])) == 4  # one input from each of 4 classes
    assert pipeline["exit_code"] == 0  # Ctrl-C stops the endpoint cleanly


def test_the_terminal_shows_the_pipeline_not_rays_chatter(pipeline):
    printed = pipeline["printed"]
    assert "[2/5] final training" in printed and "val_accuracy" in printed and "[5/5] smoke request" in printed
    for noise in ("Running Dataset", "split(1, equal=True)", "execution finished", "exclude_resources",
                  "Checkpoint successfully created", "PreemptionWatcher"):
        assert noise not in printed, f"{noise!r} in the output"
    # every epoch's progress line, none merged by Ray's log deduplication ("[repeated 7x across cluster]")
    epochs = yaml.safe_load((ROOT / "jobs" / "digits.yaml").read_text())["train"]["epochs"]
    final = printed.split("[2/5] final training")[1]
    assert [int(n) for n in re.findall(rf"epoch +(\d+)/{epochs} ", final)] == list(range(1, epochs + 1))
    assert "repeated" not in printed


def test_the_running_endpoint_returns_the_lineage_the_registry_holds(pipeline):
    r, model = pipeline["result"], pipeline["model"]
    for key in ("config_hash", "data_fingerprint", "code_version", "run"):
        assert model["lineage"][key] == r["lineage"][key]
    assert model["registry"]["version"] == 1 and model["registry"]["ref"] == "models:/digits@production"
    assert model["registry"]["metrics"]["test_accuracy"] == r["metrics"]["test_accuracy"]
    (row,) = pipeline["models"]["models"]["digits"]
    assert row["version"] == 1 and set(row["aliases"]) == {"candidate", "production"}


def test_the_report_shows_images_that_exist(pipeline):
    report = Path(pipeline["result"]["report"])
    html = report.read_text()
    images = re.findall(r'<img src="([^"]+)"', html)
    assert {"curves.png", "confusion.png", "per_class.png", "search-trials.png"} <= set(images)
    assert all((report.parent / name).stat().st_size > 1000 for name in images)
    assert list((report.parent.parent / "tensorboard").glob("events.out.tfevents.*"))  # TensorBoard, per run


def test_evaluate_reproduces_the_registered_test_accuracy(pipeline):
    r = pipeline["result"]
    marker = f"e2e-{uuid.uuid4().hex[:8]}"
    code, lines = finish(cli("evaluate", r["checkpoint"], "--json", marker=marker), marker)
    assert code == 0, "\n".join(lines[-30:])
    assert json.loads(lines[-1])["metrics"]["test_accuracy"] == r["metrics"]["test_accuracy"]


def test_a_worse_model_is_registered_but_not_promoted_and_production_keeps_serving(pipeline):
    """A second run into the same registry, too short to pass the gates: it exits after the smoke request.
    No search (tune=null): the pipeline's 4 steps, and the gates are what is tested."""
    marker = f"e2e-{uuid.uuid4().hex[:8]}"
    code, lines = finish(cli("run", "jobs/digits.yaml", f"storage.path={pipeline['storage']}", "--exit-after-smoke",
                             "--json", "tune=null", "train.epochs=1", "optim.lr=0.0001",
                             "--port", str(free_port()), marker=marker), marker)
    assert code == 0, "\n".join(lines[-30:])
    r = json.loads(lines[-1])
    assert r["registered_version"] == 2 and r["model_version"] == 1 and not r["promotion"]["promoted"]
    assert "below the required 0.95" in r["promotion"]["reasons"][0]
    assert r["smoke"]["status"] == 200 and r["metrics"] == pipeline["result"]["metrics"]  # production's, still served
    assert any("NOT promoted" in line for line in lines)


@pytest.mark.reliability
def test_killed_driver_resumes_from_its_last_checkpoint(tmp_path):
    marker = f"e2e-{uuid.uuid4().hex[:8]}"
    # 30 epochs of about 0.25 s: the kill lands mid-run although the epoch lines reach us late
    args = ["train", "jobs/digits-mlp.yaml", f"storage.path={tmp_path}", "train.run_name=killed", "train.epochs=30"]
    proc = cli(*args, marker=marker)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    deadline = time.time() + 300
    seen = ""
    while "epoch   4/30" not in seen and time.time() < deadline and proc.poll() is None:
        try:
            seen = lines.get(timeout=1)
        except queue.Empty:
            pass
    assert "epoch   4/30" in seen, "training never reached epoch 4"
    kill_marked(marker)  # the driver and its embedded Ray, mid-run
    proc.wait(timeout=30)

    code, out = finish(cli(*args, "--json", marker=marker), marker)
    assert code == 0, "\n".join(out[-30:])
    result = json.loads(out[-1])
    # resumed from the newest complete checkpoint, not restarted: epoch 3's was reported before epoch 4
    # printed its line; epoch 4's (or a later one's) may have landed before the kill
    assert 3 <= result["start_epoch"] < 30, result["start_epoch"]
    assert any(f"resuming killed after epoch {result['start_epoch']}" in line for line in out)
    assert not any("epoch   1/30" in line for line in out)
    print(f"driver kill: killed after epoch line 4, resumed after epoch {result['start_epoch']}")
    # another run name finds nothing to resume in the same storage: it starts fresh
    assert newest_checkpoint(StorageConfig(path=str(tmp_path)), "killed") is not None
    assert newest_checkpoint(StorageConfig(path=str(tmp_path)), "another-name") is None


def read_until(proc, needle: str, timeout_s: float) -> str:
    """Lines of a running process until one contains needle (bounded); that line. Every line read,
    then and after, goes to proc.seen (shown by wait_exit)."""
    lines: queue.Queue = queue.Queue()
    proc.seen = []

    def reader():
        for line in proc.stdout:
            proc.seen.append(line)
            lines.put(line)

    threading.Thread(target=reader, daemon=True).start()
    deadline = time.time() + timeout_s
    while time.time() < deadline and proc.poll() is None:
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            continue
        if needle in line:
            return line
    raise AssertionError(f"{needle!r} never appeared (exit code {proc.poll()})")


def wait_exit(proc, timeout_s: float) -> int:
    """The exit code; if it does not exit in time, fail with the last lines it printed."""
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"no exit {timeout_s:.0f}s after Ctrl-C; last output:\n"
                             + "".join(proc.seen[-40:])) from None


def write_inputs(path, n=6):
    x = np.random.default_rng(1).uniform(0, 16, size=(n, 1, 8, 8)).round(2).tolist()
    path.write_text(json.dumps({"instances": x}))
    return str(path)


def test_serve_cli_answers_as_offline_predict_and_stops_on_ctrl_c(pipeline, tmp_path):
    checkpoint = pipeline["result"]["checkpoint"]
    marker = f"e2e-{uuid.uuid4().hex[:8]}"
    inputs = write_inputs(tmp_path / "in.json")
    proc = cli("serve", checkpoint, "--port", str(free_port()), marker=marker)
    try:
        ray_address = read_until(proc, "From another shell", 240).split("--address ")[1].strip()
        url = next(line for line in proc.seen if line.startswith("serving ")).split(" at ")[1].split()[0]
        # the embedded Ray listens on 127.0.0.1 only: another process reaches it there, with its token
        code, status = finish(cli("serve", "status", "--address", ray_address, marker=marker), marker + "-x")
        assert code == 0 and '"status": "RUNNING"' in "".join(status), status[-10:]
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
        # Ray Serve's metrics, where the printed URL says, counting the answers above (Ray exports every 10 s)
        metrics = next(line for line in proc.seen if line.startswith("metrics ")).split()[-1]
        assert metrics.startswith("http://127.0.0.1:")
        deadline, answered = time.time() + 60, {}
        while time.time() < deadline and not {"200", "422"} <= answered.keys():
            time.sleep(2)
            answered = {c["status_code"]: c for c in served_requests(http("GET", metrics)[2])}
        assert {"200", "422"} <= answered.keys(), answered
        proc.send_signal(signal.SIGINT)
        assert wait_exit(proc, 60) == 0
    finally:
        kill_marked(marker)


def served_requests(metrics: str) -> list[dict]:
    """The labels of each POST that Prometheus' text says the endpoint answered."""
    from prometheus_client.parser import text_string_to_metric_families

    return [sample.labels for family in text_string_to_metric_families(metrics)
            if family.name == "ray_serve_num_http_requests" for sample in family.samples
            if sample.labels.get("method") == "POST" and sample.labels.get("application") == "orchestrator"]


def test_rays_own_serve_run_brings_up_deploy_serve_yaml(pipeline, tmp_path):
    checkpoint = pipeline["result"]["checkpoint"]
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
        deadline, ready, last_error = time.time() + 240, None, None
        while time.time() < deadline and proc.poll() is None and not ready:
            try:
                ready = http("GET", f"http://127.0.0.1:{port}/readyz", timeout=5)[2].get("ready")
            except (OSError, AttributeError, http_client.HTTPException) as e:  # not up, or not yet Serve's proxy
                last_error = e
                time.sleep(1)
        assert ready, f"serve run never became ready on port {port} (exit code {proc.poll()}; last: {last_error!r})"
        body = json.dumps({"instances": np.zeros((2, 1, 8, 8)).tolist()}).encode()
        status, _, answer = http("POST", f"http://127.0.0.1:{port}/v1/predict", body,
                                 {"Content-Type": "application/json"})
        assert status == 200 and len(answer["predictions"]) == 2
        assert http("GET", f"http://127.0.0.1:{port}/v1/model")[2]["checkpoint"] == checkpoint
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # Ray's CLI sleeps in 10 s steps, so a SIGINT that lands on another of
            # its threads waits up to 10 s, then serve.shutdown(): how fast it stops is not what this test checks
            print("serve run had not exited 10 s after Ctrl-C; ended by its marker")
        finally:
            kill_marked(marker)
