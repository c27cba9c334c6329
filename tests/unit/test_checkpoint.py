import json
import pickle

import pytest
import torch

from orchestrator import engine
from orchestrator.checkpoint import read_checkpoint, write_checkpoint
from orchestrator.config import config_from_dict
from orchestrator.errors import CheckpointError
from orchestrator.models import build_model

CFG = config_from_dict({"name": "t", "data": {"name": "digits"}, "model": {"name": "mlp", "hidden_sizes": [16]},
                        "optim": {"name": "adam", "schedule": "constant"}})
INFO = {"input_shape": [8], "label_names": ["a", "b", "c"], "normalization": {}, "data_fingerprint": "x"}


def _trained(steps=3):
    torch.manual_seed(0)
    model = build_model(CFG.model, [8], 3)
    opt = engine.make_optimizer(model, CFG.optim)
    x, y = torch.randn(64, 8), torch.randint(0, 3, (64,))
    engine.train_epoch(model, engine.batches_from_tensors(x, y, 16), opt, CFG.optim, 0, 2, 4, torch.device("cpu"))
    return model, opt, (x, y)


def _write(path, model, opt):
    write_checkpoint(str(path), model=model, config=CFG, model_info=INFO, metrics={"val_accuracy": 0.5},
                     optimizer=opt, train_state={"epoch": 1, "history": []})


def test_round_trip_predicts_identically_and_resumes_exactly(tmp_path):
    model, opt, (x, y) = _trained()
    _write(tmp_path, model, opt)
    ckpt = read_checkpoint(str(tmp_path))
    assert ckpt.metrics == {"val_accuracy": 0.5} and ckpt.train_state()["epoch"] == 1 and ckpt.config == CFG
    restored = ckpt.model()
    model.eval()
    assert torch.equal(restored(x), model(x))

    # resuming from the checkpoint continues exactly like never stopping
    restored.train()
    opt2 = engine.make_optimizer(restored, CFG.optim)
    opt2.load_state_dict(ckpt.optimizer_state())
    for m, o in ((model, opt), (restored, opt2)):
        torch.manual_seed(1)  # same dropout masks
        engine.train_epoch(m, engine.batches_from_tensors(x, y, 16), o, CFG.optim, 1, 2, 4, torch.device("cpu"))
    for p, q in zip(model.parameters(), restored.parameters()):
        assert torch.equal(p, q)


def test_only_safetensors_and_json_are_written(tmp_path):
    model, opt, _ = _trained()
    _write(tmp_path, model, opt)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["config.yaml", "manifest.json", "metrics.json", "model.json", "model.safetensors",
                     "optimizer.safetensors", "state.json"]


@pytest.fixture
def ckpt_dir(tmp_path):
    model, opt, _ = _trained()
    _write(tmp_path, model, opt)
    return tmp_path


@pytest.mark.reliability
def test_tampered_file_is_refused(ckpt_dir):
    data = bytearray((ckpt_dir / "model.safetensors").read_bytes())
    data[-1] ^= 1
    (ckpt_dir / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="model.safetensors does not match its sha256"):
        read_checkpoint(str(ckpt_dir))


@pytest.mark.reliability
def test_unfinished_checkpoint_is_refused(ckpt_dir):
    (ckpt_dir / "manifest.json").unlink()
    with pytest.raises(CheckpointError, match="no manifest.json"):
        read_checkpoint(str(ckpt_dir))


def test_missing_listed_file_is_refused(ckpt_dir):
    (ckpt_dir / "metrics.json").unlink()
    with pytest.raises(CheckpointError, match="metrics.json is listed in the manifest but missing"):
        read_checkpoint(str(ckpt_dir))


class Boom:
    def __reduce__(self):
        return (exec, ("open('/tmp/orchestrator-pwned', 'w').write('x')",))


@pytest.mark.reliability
def test_pickle_payload_with_a_forged_manifest_never_runs(ckpt_dir, tmp_path_factory):
    import hashlib
    import os

    payload = pickle.dumps(Boom())
    (ckpt_dir / "model.safetensors").write_bytes(payload)
    manifest = json.loads((ckpt_dir / "manifest.json").read_text())
    manifest["files"]["model.safetensors"]["sha256"] = hashlib.sha256(payload).hexdigest()
    (ckpt_dir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="model.safetensors is not a valid safetensors file"):
        read_checkpoint(str(ckpt_dir)).model()
    assert not os.path.exists("/tmp/orchestrator-pwned")


@pytest.mark.reliability
def test_unsafe_manifest_paths_are_refused(ckpt_dir):
    manifest = json.loads((ckpt_dir / "manifest.json").read_text())
    manifest["files"]["../../etc/passwd"] = {"sha256": "0"}
    (ckpt_dir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="unsafe path"):
        read_checkpoint(str(ckpt_dir))


@pytest.mark.reliability
def test_hostile_checkpoints_are_refused_and_their_payload_never_runs(ckpt_dir, tmp_path):
    import hashlib

    from orchestrator.predictor import Predictor

    planted = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (exec, (f"open({str(planted)!r}, 'w').write('x')",))

    # a torch .pt (pickle) file listed in a forged manifest: read as bytes, never unpickled
    torch.save({"weights": Payload()}, ckpt_dir / "model.pt")
    data = (ckpt_dir / "model.pt").read_bytes()
    manifest = json.loads((ckpt_dir / "manifest.json").read_text())
    manifest["files"]["model.pt"] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (ckpt_dir / "manifest.json").write_text(json.dumps(manifest))
    Predictor.load(str(ckpt_dir)).canary()  # loads and predicts from the safetensors weights alone

    # a directory holding only a .pt file, and URIs outside the schemes storage allows
    (tmp_path / "pt-only").mkdir()
    torch.save({"weights": Payload()}, tmp_path / "pt-only" / "model.pt")
    refused = {str(tmp_path / "pt-only"): "no manifest.json", "http://evil.example/ckpt": "unsupported storage URI",
               "file:///etc": "unsupported storage URI", "s3:///no-bucket": "has no bucket"}
    for uri, message in refused.items():
        with pytest.raises(CheckpointError, match=message):
            read_checkpoint(uri)
    assert not planted.exists()
    print(f"hostile checkpoints: {len(refused)} URIs refused, a listed .pt file never unpickled, payload never ran")


WRITER = """
import sys, time, tempfile
import pyarrow.fs, torch
from orchestrator.checkpoint import write_checkpoint
from orchestrator.models import build_model
from tests.unit.test_checkpoint import CFG, INFO

run = sys.argv[1]
model = build_model(CFG.model.model_copy(update={"hidden_sizes": [4096, 4096]}), [8], 3)  # ~70 MB of weights
for epoch in range(1, 4):
    with torch.no_grad():
        next(model.parameters()).add_(1.0)  # each epoch's weights differ
    with tempfile.TemporaryDirectory() as staging:
        write_checkpoint(staging, model=model, config=CFG, model_info=INFO, metrics={"val_accuracy": 0.5})
        print(f"copying {epoch}", flush=True)
        started = time.perf_counter()
        dest = f"{run}/epoch-{epoch:04d}"
        pyarrow.fs.LocalFileSystem().create_dir(dest)
        pyarrow.fs.copy_files(staging, dest)  # how Ray Train persists a checkpoint
        print(f"copied {epoch} {time.perf_counter() - started:.4f}", flush=True)
"""


@pytest.mark.reliability
def test_a_checkpoint_copy_killed_mid_write_is_never_resumed_served_or_registered(tmp_path):
    import random
    import signal
    import subprocess
    import sys
    import time

    from orchestrator.config import ServeArgs, StorageConfig
    from orchestrator.registry import Registry
    from orchestrator.serve import check_deployable
    from orchestrator.train import newest_checkpoint
    from tests.conftest import ROOT

    run = tmp_path / "r"
    child = subprocess.Popen([sys.executable, "-c", WRITER, str(run)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    copy_s = []
    for line in child.stdout:  # the child copies epochs 1 and 2 whole, then is killed copying epoch 3
        if line.startswith("copied"):
            copy_s.append(float(line.split()[2]))
        elif line.strip() == "copying 3":
            time.sleep(random.Random(0).uniform(0, 0.2) * min(copy_s))
            child.send_signal(signal.SIGKILL)
            break
    child.wait(timeout=60)
    cut = run / "epoch-0003"
    print(f"checkpoint copy killed: whole copies took {copy_s} s; killed epoch 3's with "
          f"{len(list(cut.glob('*')))} files there")
    assert child.returncode == -signal.SIGKILL and cut.exists()  # killed mid-copy: the directory was started

    with pytest.raises(CheckpointError):
        read_checkpoint(str(cut))
    assert newest_checkpoint(StorageConfig(path=str(tmp_path)), "r") == (2, str(run / "epoch-0002"))  # resume
    with pytest.raises(CheckpointError):
        check_deployable(ServeArgs(checkpoint=str(cut)), "127.0.0.1")  # serve
    registry = Registry(str(tmp_path / "registry"))
    with pytest.raises(CheckpointError):
        registry.register("m", str(cut), metrics={}, gates={}, source={})
    assert registry.models() == []  # nothing half-registered either
