"""Ray Train on the shared local cluster: DDP, checkpoints, resume, S3 storage."""

import json

import boto3
import pytest

from orchestrator.checkpoint import read_checkpoint
from orchestrator.config import load_config
from orchestrator.errors import ConfigError
from orchestrator.evaluate import evaluate_checkpoint
from orchestrator.train import train
from tests.conftest import ROOT

pytestmark = pytest.mark.ray
MLP = ROOT / "jobs" / "digits-mlp.yaml"


def test_mlp_job_reaches_its_accuracy_target(ray_cluster, tmp_path):
    result = train(load_config(MLP, [f"storage.path={tmp_path}"]))
    print("digits-mlp:", json.dumps(result.metrics))
    assert result.metrics["test_accuracy"] >= 0.95
    evaluated = evaluate_checkpoint(result.checkpoint)
    assert evaluated["metrics"]["test_accuracy"] == result.metrics["test_accuracy"]
    # beside always answering the most common class of the training split: about a tenth of the digits
    assert result.baseline == evaluated["baseline"] and result.baseline["answer"] in [str(d) for d in range(10)]
    assert 0.05 < result.baseline["accuracy"] < 0.15 < 0.95 <= result.metrics["test_accuracy"]


def test_the_embedded_rays_processes_find_their_own_cluster(ray_cluster):
    """Ray's State API, in a worker, finds its cluster by RAY_ADDRESS, else by the last `ray start` on the machine,
    and Ray Train's placement-group cleaner asks it whether the run's controller lives: with another Ray on the
    machine it asked that one, which knows no such controller, and removed the run's placement group (or died,
    "Found multiple active Ray instances"). The embedded Ray's processes have its address."""
    import os

    @ray_cluster.remote(num_cpus=0)
    def found() -> tuple[str | None, str]:
        from ray._private.services import canonicalize_bootstrap_address_or_die

        return os.environ.get("RAY_ADDRESS"), canonicalize_bootstrap_address_or_die(None)

    gcs = ray_cluster.get_runtime_context().gcs_address
    assert ray_cluster.get(found.remote()) == (gcs, gcs) and gcs.startswith("127.0.0.1:")


def test_streaming_shares_of_ray_datasets_to_two_workers_learns(ray_cluster, tmp_path):
    """train.streaming: each worker streams its share of the Ray Datasets every epoch, instead of
    taking its rows of the in-memory arrays."""
    result = train(load_config(MLP, [f"storage.path={tmp_path}", "train.streaming=true", "train.num_workers=2",
                                     "train.epochs=3"]))
    print("streamed:", json.dumps(result.metrics))
    assert result.metrics["test_accuracy"] >= 0.8  # 3 epochs of 628 rows a worker; 0.1 is chance
    run = read_checkpoint(str(tmp_path / result.run / "epoch-0003")).train_state()
    assert [h["epoch"] for h in run["history"]] == [1, 2, 3]


def test_resuming_with_another_model_is_refused(ray_cluster, tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "config.yaml").write_text(
        (ROOT / "jobs" / "digits-mlp.yaml").read_text().replace("hidden_sizes: [256, 128]", "hidden_sizes: [8]")
    )
    with pytest.raises(ConfigError, match="different 'model'"):
        train(load_config(MLP, [f"storage.path={tmp_path}", "train.run_name=r"]))


def test_what_the_local_ray_can_never_fit_is_refused_rather_than_waited_for(ray_cluster, tmp_path):
    from orchestrator import serve, tune
    from orchestrator.config import ServeArgs
    from orchestrator.train import check_resources

    cpus = ray_cluster.cluster_resources()["CPU"]
    tuned = ROOT / "jobs" / "digits-tune.yaml"
    with pytest.raises(ConfigError, match=f"train.num_workers {int(cpus) + 1} needs {cpus + 1:g} CPUs, and the "
                                          f"local Ray on this machine has {cpus:g} CPUs: lower train.num_workers"):
        train(load_config(MLP, [f"storage.path={tmp_path}", f"train.num_workers={int(cpus) + 1}"]))
    # refused before anything was written: the storage root holds only the mark its writable check leaves
    assert [p.name for p in tmp_path.iterdir()] == [".orchestrator-storage"]
    with pytest.raises(ConfigError, match="0 GPUs: lower tune.cpus_per_trial or tune.gpus_per_trial"):
        tune.check_resources(load_config(tuned, ["tune.gpus_per_trial=1"]))
    with pytest.raises(ConfigError, match="each replica of the endpoint needs 1 CPU and 0.5 GPUs"):
        serve.check_resources(ServeArgs(checkpoint="-", num_gpus=0.5))
    check_resources(load_config(MLP, [f"train.num_workers={int(cpus)}"]))  # what fits passes
    tune.check_resources(load_config(tuned, [f"tune.cpus_per_trial={cpus:g}"]))


def test_s3_storage_writes_checkpoints_and_reads_them_back(ray_cluster, s3_bucket):
    cfg = load_config(MLP, [f"storage.path=s3://{s3_bucket}/runs", "train.run_name=s3run", "train.epochs=2"])
    result = train(cfg)
    assert result.checkpoint.startswith(f"s3://{s3_bucket}/runs/s3run/epoch-")
    keys = {o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=s3_bucket)["Contents"]}
    assert {"runs/s3run/config.yaml", "runs/s3run/result.json"} <= keys
    assert any(k.endswith("/manifest.json") and "/epoch-" in k for k in keys)
    ckpt = read_checkpoint(result.checkpoint)
    assert ckpt.config.storage.path == f"s3://{s3_bucket}/runs"
    again = evaluate_checkpoint(result.checkpoint)
    assert again["metrics"]["test_accuracy"] == result.metrics["test_accuracy"]
