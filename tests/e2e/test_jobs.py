"""Job submission over HTTP to a real `ray start --head` on loopback, token auth on, own ports."""

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_port, http, kill_marked

pytestmark = pytest.mark.e2e
VENV_BIN = str(Path(sys.executable).parent)


@pytest.fixture(scope="module")
def ray_head():
    """A head with its own ports, a short temp dir, the project's venv on PATH and a fresh token."""
    marker = f"head-{uuid.uuid4().hex[:8]}"
    temp = tempfile.mkdtemp(prefix="o-", dir="/tmp")  # short: Ray's socket paths have a length limit
    token = Path(temp) / "token"
    token.write_text(secrets.token_hex(32))
    dashboard, gcs = free_port(), free_port()
    env = {**os.environ, "ORCHESTRATOR_TEST_MARKER": marker, "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN_PATH": str(token), "PATH": f"{VENV_BIN}:{os.environ['PATH']}"}
    for var in ("RAY_ADDRESS", "RAY_AUTH_TOKEN"):
        env.pop(var, None)
    cmd = [f"{VENV_BIN}/ray", "start", "--head", f"--port={gcs}", "--num-cpus=2",
           "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
           f"--temp-dir={temp}", "--disable-usage-stats", f"--ray-client-server-port={free_port()}",
           f"--dashboard-agent-listen-port={free_port()}", f"--node-manager-port={free_port()}",
           f"--object-manager-port={free_port()}", f"--runtime-env-agent-port={free_port()}",
           f"--metrics-export-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}"]
    try:
        subprocess.run(cmd, env=env, check=True, capture_output=True, text=True, timeout=120)
        yield {"address": f"http://127.0.0.1:{dashboard}", "token": str(token), "gcs": f"127.0.0.1:{gcs}"}
    finally:
        kill_marked(marker)
        shutil.rmtree(temp, ignore_errors=True)


def orchestrator(*args, token_env: dict, timeout=600):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(token_env, HOME=tempfile.mkdtemp())  # no ~/.ray/auth_token to fall back on
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=timeout)


def test_submit_run_leaves_the_pipelines_endpoint_serving_on_the_cluster(ray_head, tmp_path):
    """The README's pipeline config as a job, unedited but for a short search: tune, train, register, serve."""
    token = {"RAY_AUTH_TOKEN_PATH": ray_head["token"]}
    port = free_port()
    proc = orchestrator("submit", "jobs/digits.yaml", f"storage.path={tmp_path}", "tune.num_samples=2",
                        "tune.scheduler.max_epochs=2", "train.epochs=3", "registry.min_metrics={}",
                        "--address", ray_head["address"], "--wait", "run", "--", "--port", str(port), token_env=token)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "shipping" in proc.stdout and "[5/5] smoke request" in proc.stdout and "SUCCEEDED" in proc.stdout
    assert "Running Dataset" not in proc.stdout and "exclude_resources" not in proc.stdout  # the job's output is its own
    # the job's own last line: `orchestrator run --json`'s result, as it came back in the logs
    result = next(json.loads(line) for line in reversed(proc.stdout.splitlines())
                  if line.startswith("{") and '"model_version"' in line)
    assert result["model_version"] == 1 and result["smoke"]["status"] == 200
    # the job has ended; its endpoint serves on, with the laptop's code version (no .git was shipped)
    model = http("GET", f"http://127.0.0.1:{port}/v1/model")[2]
    assert model["registry"]["version"] == 1 and model["lineage"] == result["lineage"]
    assert model["lineage"]["code_version"].startswith("git:")

    # promote and rollback from the laptop move the running endpoint (a rolling update on the cluster)
    from orchestrator.registry import Registry

    registry = Registry(result["registry"])
    registry.register("digits", result["checkpoint"], metrics=result["metrics"], gates={}, source={"copy_of": 1})
    cluster = {**token, "RAY_AUTH_MODE": "token"}
    for args, version in ((["promote", "2"], 2), (["rollback"], 1)):
        moved = orchestrator("models", *args, "--registry", result["registry"], "--address", ray_head["gcs"],
                             "--json", token_env=cluster)
        assert moved.returncode == 0, moved.stdout[-2000:] + moved.stderr[-2000:]
        assert [e["app"] for e in json.loads(moved.stdout.splitlines()[-1])["endpoints"]] == ["orchestrator"]
        assert http("GET", f"http://127.0.0.1:{port}/v1/model")[2]["registry"]["version"] == version
    # and the endpoint goes (its replica's CPU is the next test's)
    assert orchestrator("serve", "shutdown", "--address", ray_head["gcs"], token_env=cluster).returncode == 0

    listed = orchestrator("list", "--address", ray_head["address"], "--json", token_env=token)
    assert listed.returncode == 0 and "SUCCEEDED" in listed.stdout


def test_stop_ends_a_running_job(ray_head, tmp_path):
    token = {"RAY_AUTH_TOKEN_PATH": ray_head["token"]}
    proc = orchestrator("submit", "jobs/digits-cnn.yaml", f"storage.path={tmp_path}", "--address",
                        ray_head["address"], "--json", token_env=token)
    assert proc.returncode == 0, proc.stderr[-3000:]
    job_id = json.loads(proc.stdout.splitlines()[-1])["job_id"]
    deadline = time.time() + 120
    while time.time() < deadline:  # running: its run line is out, and Ray Train is starting its workers
        if "parameters" in orchestrator("logs", job_id, "--address", ray_head["address"], token_env=token).stdout:
            break
        time.sleep(2)
    assert orchestrator("stop", job_id, "--address", ray_head["address"], token_env=token).returncode == 0
    status, deadline = "", time.time() + 60
    while status != "STOPPED" and time.time() < deadline:
        time.sleep(1)
        out = orchestrator("status", job_id, "--address", ray_head["address"], "--json", token_env=token)
        status = json.loads(out.stdout.splitlines()[-1])["status"]
    assert status == "STOPPED"


@pytest.mark.reliability
@pytest.mark.parametrize("token_env, message", [
    ({}, "requires a Ray auth token"),
    ({"RAY_AUTH_TOKEN": "not-the-token"}, "refused the Ray auth token"),
])
def test_a_missing_or_wrong_token_is_a_clear_auth_error(ray_head, token_env, message):
    proc = orchestrator("list", "--address", ray_head["address"], token_env=token_env, timeout=120)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]


def test_an_oversized_working_directory_is_refused_before_upload(tmp_path, monkeypatch):
    from orchestrator import jobs
    from orchestrator.errors import ConfigError

    (tmp_path / "jobs").mkdir()
    shutil.copy(ROOT / "jobs" / "digits-mlp.yaml", tmp_path / "jobs" / "m.yaml")
    (tmp_path / "blobs").mkdir()
    (tmp_path / "blobs" / "big.bin").write_bytes(b"0" * 3 * 2**20)
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "pack").write_bytes(b"0" * 5 * 2**20)  # excluded: does not count
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"over the 2 MiB upload limit.*blobs \(3\.0 MiB\)"):
        jobs.submit("jobs/m.yaml", [], "http://127.0.0.1:9", root=tmp_path, limit=2 * 2**20)
    assert jobs.package(tmp_path)[0] < 3.1 * 2**20


@pytest.mark.parametrize("path, outside, refused", [
    ("inputs/t.csv", False, None), ("s3://bucket/t.csv", False, None),
    ("/elsewhere/t.csv", True, None), ("../t.csv", True, None),  # the cluster's own disk may hold these
    ("data/t.csv", False, "never ships 'data' (data/t.csv"), ("inputs/t.parquet", False, "never ships '*.parquet'"),
    ("inputs", False, "never ships '*.npz' (inputs/part-1.npz"),  # a directory: every file in it is read
])
def test_data_the_job_cannot_read_on_the_cluster_is_pointed_out_or_refused(tmp_path, monkeypatch, capsys, path,
                                                                             outside, refused):
    from orchestrator import jobs
    from orchestrator.errors import ConfigError

    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "t.yaml").write_text(f"name: t\ndata: {{name: files, path: '{path}'}}\nmodel: {{name: mlp}}\n")
    (tmp_path / "inputs").mkdir()
    (tmp_path / "inputs" / "part-0.csv").write_text("x,label\n1,0\n")
    (tmp_path / "inputs" / "part-1.npz").write_bytes(b"0")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as e:  # nothing listens there: the checks come before any connection
        jobs.submit("jobs/t.yaml", [], "http://127.0.0.1:9", root=tmp_path)
    assert (refused in str(e.value) and "Put the data on s3://" in str(e.value)) if refused else \
        "cannot reach the Jobs API" in str(e.value)
    assert ("is outside the shipped directory" in capsys.readouterr().out) == outside


@pytest.mark.reliability
def test_an_unauthenticated_job_submission_is_refused_and_nothing_runs(ray_head, tmp_path):
    planted = tmp_path / "ran"
    body = json.dumps({"entrypoint": f"touch {planted}"}).encode()
    url, headers = f"{ray_head['address']}/api/jobs/", {"Content-Type": "application/json"}
    assert http("POST", url, body, headers)[0] == 401
    assert http("POST", url, body, {**headers, "Authorization": "Bearer not-the-token"})[0] == 403
    time.sleep(5)  # a job that had been accepted would have run by now
    assert not planted.exists()
    listed = orchestrator("list", "--address", ray_head["address"], "--json", token_env={
        "RAY_AUTH_TOKEN_PATH": ray_head["token"]})
    assert str(planted) not in listed.stdout
