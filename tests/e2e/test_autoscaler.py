"""Ray's real autoscaler on one machine (fake multinode): training that asks for the "GPU"
worker type's resource brings a worker node up, runs on it, and the node goes when idle."""

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
import yaml

from tests.conftest import ROOT, free_port, kill_marked

pytestmark = pytest.mark.e2e
VENV_BIN = str(Path(sys.executable).parent)


def alive_nodes(address: str, env: dict) -> int:
    probe = ("import ray; ray.init(address=%r, logging_level='ERROR', log_to_driver=False); "
             "print('NODES', sum(n['Alive'] for n in ray.nodes()))")
    out = subprocess.run([sys.executable, "-c", probe % address], env=env, capture_output=True, text=True, timeout=120)
    counts = [int(line.split()[1]) for line in out.stdout.splitlines() if line.startswith("NODES ")]
    return counts[-1] if counts else -1


def test_training_on_the_gpu_type_adds_a_node_which_goes_when_idle(tmp_path):
    marker = f"fake-{uuid.uuid4().hex[:8]}"
    temp = tempfile.mkdtemp(prefix="f-", dir="/tmp")
    token = Path(temp) / "token"
    token.write_text(secrets.token_hex(32))
    port = free_port()
    address = f"127.0.0.1:{port}"
    config = yaml.safe_load((ROOT / "cluster" / "fake-multinode.yaml").read_text())
    config["provider"]["gcs_address"] = address
    (Path(temp) / "fake.json").write_text(json.dumps(config))
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("RAY_")}, "ORCHESTRATOR_TEST_MARKER": marker,
           "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token), "PATH": f"{VENV_BIN}:{os.environ['PATH']}"}
    head = {**env, "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"}
    stderr = (tmp_path / "stderr").open("w")  # a file, not a pipe: nobody reads it while training runs
    try:
        subprocess.run([f"{VENV_BIN}/ray", "start", "--head", f"--port={port}", "--num-cpus=1",
                        f"--autoscaling-config={temp}/fake.json", f"--temp-dir={temp}", "--disable-usage-stats",
                        "--include-dashboard=false", f"--ray-client-server-port={free_port()}"],
                       env=head, check=True, capture_output=True, text=True, timeout=120)
        assert alive_nodes(address, env) == 1
        train = subprocess.Popen(
            [sys.executable, "-m", "orchestrator.cli", "train", "jobs/digits-mlp.yaml", f"storage.path={tmp_path}",
             "train.epochs=2", "train.num_workers=1", "train.resources_per_worker={fake_gpu: 1}", "--address",
             address, "--json"], env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=stderr, text=True)
        peak, deadline = 1, time.time() + 300
        while train.poll() is None and time.time() < deadline:
            peak = max(peak, alive_nodes(address, env))
            time.sleep(2)
        out, _ = train.communicate(timeout=60)
        assert train.returncode == 0, out[-2000:] + (tmp_path / "stderr").read_text()[-3000:]
        assert peak >= 2, "the autoscaler never added a worker node"
        result = json.loads(out.splitlines()[-1])
        assert (Path(result["checkpoint"]) / "manifest.json").exists()  # it ran: only the new node has fake_gpu
        deadline, nodes = time.time() + 120, peak
        while nodes > 1 and time.time() < deadline:
            time.sleep(3)
            nodes = alive_nodes(address, env)
        assert nodes == 1, "the idle worker node was not removed"
    finally:
        stderr.close()
        kill_marked(marker)
        shutil.rmtree(temp, ignore_errors=True)
