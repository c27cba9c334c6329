"""Every bad input exits 2 with one message naming the problem, before any Ray work starts."""

import os
import socket
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
CNN = str(ROOT / "jobs" / "digits-cnn.yaml")


def run_cli(*args, env=None, cwd=None):
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], capture_output=True, text=True,
                          timeout=120, env=full_env, cwd=cwd)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write(tmp_path, text):
    p = tmp_path / "exp.yaml"
    p.write_text(text)
    return str(p)


def binary(tmp_path, name: str = "in.json") -> str:
    p = tmp_path / name
    p.write_bytes(b"\xff\xfe\x00not text")
    return str(p)


def archive(tmp_path) -> str:
    """A dataset as some downloads come: a compressed tar of the data files (a zip is read as a folder)."""
    (tmp_path / "train.csv").write_text("a,label\n1,0\n")
    with tarfile.open(tmp_path / "data.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "train.csv", "train.csv")
    return str(tmp_path / "data.tar.gz")


def table(tmp_path, csv: str, model: str = "{name: mlp}") -> str:
    """An experiment on a CSV table (with a search space), for train, tune and run."""
    (tmp_path / "t.csv").write_text(csv)
    return write(tmp_path, f"data: {{name: files, path: {tmp_path / 't.csv'}}}\nmodel: {model}\n"
                           f"storage: {{path: {tmp_path / 'runs'}}}\ntune:\n  space:\n    optim.lr: {{uniform: [0.001, 0.1]}}\n")


def windows_table(tmp_path) -> str:
    """A CSV that Excel on Windows saved: cp1252, not UTF-8."""
    (tmp_path / "cities.csv").write_bytes("city,label\nMünchen,1\nKöln,0\n".encode("cp1252"))
    return str(tmp_path / "cities.csv")


ROWS = "a,b,label\n" + "".join(f"{i},{i % 3},{i % 2}\n" for i in range(30))
TUNE_TYPO = "data: {name: digits}\nmodel: {name: mlp}\ntune:\n  space:\n    optim.lrr: {loguniform: [0.001, 0.1]}\n"

CASES = {
    "missing file": (lambda t: ["train", str(t / "nope.yaml")], "cannot read config"),
    "bad yaml": (lambda t: ["train", write(t, "model: [unclosed\n")], "not valid YAML"),
    "unknown key": (lambda t: ["train", CNN, "optim.lrr=0.1"], "did you mean 'lr'"),
    "bad value": (lambda t: ["train", CNN, "train.num_workers=0"], "train.num_workers: Input should be greater than or equal to 1"),
    "wrong type": (lambda t: ["train", CNN, "train.epochs=ten"], "train.epochs"),
    "unknown model": (lambda t: ["train", CNN, "model.name=resnet"], "model.name: 'resnet' is not one of"),
    "unknown dataset": (lambda t: ["train", CNN, "data.name=mnist"], "data.name: 'mnist' is not one of"),
    "bad override": (lambda t: ["train", CNN, "train.epochs"], "must look like section.field=value"),
    "unwritable storage": (lambda t: ["train", CNN, "storage.path=/proc/orchestrator-runs"], "cannot write to storage"),
    "bad storage uri": (lambda t: ["train", CNN, "storage.path=hdfs://bucket/x"], "unsupported storage URI"),
    "unreachable s3": (lambda t: ["train", CNN, "storage.path=s3://bucket/runs",
                                  f"storage.endpoint_url=http://127.0.0.1:{closed_port()}"], "cannot write to storage 's3://bucket/runs'"),
    "tune without a space": (lambda t: ["tune", CNN], "the config has no tune section"),
    "tune bad range": (lambda t: ["tune", write(t, TUNE_TYPO.replace("optim.lrr: {loguniform: [0.001, 0.1]}",
                                                                      "optim.lr: {uniform: [1, 0]}"))], "must be below high"),
    "tune unknown field": (lambda t: ["tune", write(t, TUNE_TYPO)], "tune.space['optim.lrr']: unknown key"),
    "missing checkpoint": (lambda t: ["evaluate", str(t / "no-such-checkpoint")], "no-such-checkpoint does not exist"),
    "a checkpoint without a manifest": (lambda t: ["evaluate", str(t)], "has no manifest.json"),
    "a file for a checkpoint": (lambda t: ["evaluate", write(t, "a: 1")], "exp.yaml is a file, not a checkpoint"),
    "a binary file for a config": (lambda t: ["train", binary(t, "model.bin")],
                                   "model.bin is binary, not a YAML config"),
    "an archive for a config": (lambda t: ["train", archive(t)], "data.tar.gz' is an archive of files"),
    "bad split": (lambda t: ["evaluate", str(t), "--split", "dev"], "invalid choice: 'dev'"),
    "unknown command": (lambda t: ["fly"], "invalid choice: 'fly'"),
    "serve a missing checkpoint": (lambda t: ["serve", str(t / "nope")], "nope does not exist"),
    "serve setting typo": (lambda t: ["serve", str(t), "max_batch=4"], "did you mean 'max_batch_size'"),
    "serve bad setting": (lambda t: ["serve", str(t), "autoscaling.min_replicas=-1"], "autoscaling.min_replicas"),
    "serve a URL for an origin": (lambda t: ["serve", str(t), "cors_origins=[https://app.example.com/login]"],
                                  "cors_origins: 'https://app.example.com/login' is not an origin"),
    "serve status without a cluster": (lambda t: ["serve", "status"], "needs --address"),
    "an address where no Ray listens": (lambda t: ["serve", "status", "--address", f"127.0.0.1:{closed_port()}"],
                                        "nothing answers at 127.0.0.1:"),  # in seconds; Ray would retry for minutes
    "a dashboard URL for a Ray address": (lambda t: ["serve", "status", "--address", "http://127.0.0.1:8265"],
                                          "give the Ray head's host:port"),
    "predict missing input": (lambda t: ["predict", "http://127.0.0.1:9", "--input", str(t / "in.json")],
                              "in.json: no such file"),
    "predict unreadable input": (lambda t: ["predict", "http://127.0.0.1:9", "--input", binary(t)],
                                 "cannot read --input"),
    "predict input not JSON": (lambda t: ["predict", str(t), "--input", write(t, "{oops")], "is not JSON"),
    "predict input a number": (lambda t: ["predict", str(t), "--input", write(t, "3")], 'must hold {"instances"'),
    "predict unreachable endpoint": (lambda t: ["predict", f"http://127.0.0.1:{closed_port()}", "--input",
                                                write(t, '{"instances": [[1]]}')], "cannot reach"),
    "run without keys beyond loopback": (lambda t: ["run", str(ROOT / "jobs" / "digits.yaml"), f"storage.path={t}",
                                                    "--host", "0.0.0.0"], "exposes the endpoint beyond this machine"),
    "run with a serve typo": (lambda t: ["run", str(ROOT / "jobs" / "digits.yaml"), "serve.max_batch=4"],
                              "did you mean 'max_batch_size'"),
    "run with a gate on a val metric": (lambda t: ["run", str(ROOT / "jobs" / "digits.yaml"),
                                                   "registry.min_metrics={val_accuracy: 0.9}"], "registry.min_metrics"),
    "models in an empty registry": (lambda t: ["models", "show", "--registry", str(t)], "holds 0 models"),
    "unreadable table": (lambda t: ["train", table(t, ROWS + "1,2\n")], "t.csv as csv: CSV parse error: Expected 3"),
    "a table not in UTF-8": (lambda t: ["train", table(t, ROWS), f"data.path={windows_table(t)}"],
                             "cities.csv is not utf-8 text: row 1 of column 'city' holds the bytes b'M\\xfcnchen'; "
                             "it reads as cp1252 ('München')"),
    "an encoding Python does not know": (lambda t: ["train", table(t, ROWS), "data.encoding=base64"],
                                         "data.encoding 'base64' is not a text encoding"),
    "evaluate data in an unknown encoding": (lambda t: ["evaluate", str(t), "--data", windows_table(t), "--encoding",
                                                        "cp9999"], "'cp9999' is not a text encoding"),
    "predict an input not in UTF-8": (lambda t: ["predict", "http://127.0.0.1:9", "--input", windows_table(t)],
                                      "--encoding for evaluate --data and predict --input"),
    "train a model unfit for the data": (lambda t: ["train", table(t, ROWS, "{name: cnn}")],
                                         "model 'cnn' needs image-shaped features [C, H, W], got [2]"),
    "tune a model unfit for the data": (lambda t: ["tune", table(t, ROWS, "{name: cnn}")], "needs image-shaped"),
    "run a model unfit for the data": (lambda t: ["run", table(t, ROWS, "{name: cnn}")], "needs image-shaped"),
    "serve an unknown model": (lambda t: ["serve", "models:/nope@production", f"registry={t}"], "no model 'nope'"),
    "serve a bad model reference": (lambda t: ["serve", "models:/digits", f"registry={t}"], "not a model reference"),
}
S3_ENV = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1"}


@pytest.mark.parametrize("case", CASES)
def test_bad_input_exits_2_with_a_clear_message(case, tmp_path, tmp_path_factory):
    make_args, message = CASES[case]
    ray_tmp = tmp_path_factory.mktemp("ray")  # where a Ray started by the command would put its session
    proc = run_cli(*make_args(tmp_path), env={**S3_ENV, "RAY_TMPDIR": str(ray_tmp)})
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not any(ray_tmp.iterdir()), "a Ray was started before the input was refused"


@pytest.mark.parametrize("command", ["serve", "run"])
def test_a_port_that_another_program_holds_exits_2_before_ray_starts(command, tmp_path, tmp_path_factory):
    from orchestrator.checkpoint import write_checkpoint
    from orchestrator.config import config_from_dict
    from orchestrator.models import build_model

    cfg = config_from_dict({"name": "t", "data": {"name": "digits"}, "model": {"name": "mlp", "hidden_sizes": [8]}})
    write_checkpoint(str(tmp_path / "ckpt"), model=build_model(cfg.model, [64], 10), config=cfg, metrics={},
                     model_info={"input_shape": [64], "label_names": [str(i) for i in range(10)], "normalization": {},
                                 "data_fingerprint": "x"})
    target = [str(tmp_path / "ckpt")] if command == "serve" else [str(ROOT / "jobs" / "digits.yaml"),
                                                                   f"storage.path={tmp_path / 'runs'}"]
    ray_tmp = tmp_path_factory.mktemp("ray")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = run_cli(command, *target, "--port", str(port), env={"RAY_TMPDIR": str(ray_tmp)})
    assert proc.returncode == 2, proc.stderr
    assert f"cannot serve on 127.0.0.1:{port}: Address already in use; choose another port (--port)" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not any(ray_tmp.iterdir()), "a Ray was started before the port was refused"


def test_version_names_this_package_and_what_it_runs_on():
    from importlib.metadata import version

    import orchestrator
    done = run_cli("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"orchestrator {orchestrator.__version__} (ray {version('ray')}, "
                                  f"torch {version('torch')}, python {sys.version.split()[0]})")
    assert version("orchestrator") == orchestrator.__version__  # the one version, read by the package's metadata
