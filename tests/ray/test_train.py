"""Ray Train on the shared local cluster: DDP, checkpoints, resume, S3 storage, user files."""

import json

import boto3
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from orchestrator import data
from orchestrator.checkpoint import read_checkpoint
from orchestrator.config import FilesData, load_config
from orchestrator.errors import ConfigError, DataError
from orchestrator.evaluate import evaluate_checkpoint
from orchestrator.train import train
from tests.conftest import ROOT

pytestmark = pytest.mark.ray
MLP = ROOT / "jobs" / "digits-mlp.yaml"


def test_mlp_job_reaches_its_accuracy_target(ray_cluster, tmp_path):
    result = train(load_config(MLP, [f"storage.path={tmp_path}"]))
    print("digits-mlp:", json.dumps(result.metrics))
    assert result.metrics["test_accuracy"] >= 0.95
    assert evaluate_checkpoint(result.checkpoint)["metrics"]["test_accuracy"] == result.metrics["test_accuracy"]


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
    assert not list(tmp_path.iterdir())  # refused before anything was written
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


def test_user_files_parquet_on_s3_and_csv_locally(ray_cluster, s3_bucket, tmp_path):
    rng = np.random.default_rng(0)
    images = rng.random((90, 1, 4, 4)).astype(np.float32)
    labels = np.array(["a", "b", "c"] * 30)
    table = pa.table({"pixels": pa.array(list(images.reshape(90, 16))), "label": labels})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    boto3.client("s3").put_object(Bucket=s3_bucket, Key="data/part-0.parquet", Body=sink.getvalue().to_pybytes())
    cfg = FilesData(name="files", path=f"s3://{s3_bucket}/data", feature_columns=["pixels"], feature_shape=[1, 4, 4])
    splits = data.load_splits(cfg, seed=0)
    assert splits.input_shape == [1, 4, 4] and splits.label_names == ["a", "b", "c"]
    assert sum(splits.num_rows.values()) == 90 and len(splits.arrays["train"][1]) == splits.num_rows["train"]

    csv = tmp_path / "table.csv"
    csv.write_text("f1,f2,target\n" + "".join(f"{i},{i * 2},{i % 2}\n" for i in range(40)))
    splits = data.load_splits(FilesData(name="files", path=str(csv), label_column="target"), seed=0)
    assert splits.input_shape == [2] and splits.label_names == ["0", "1"]
    x, _ = splits.arrays["test"]
    assert x.shape[1:] == (2,) and x.dtype == np.float32

    (tmp_path / "parts").mkdir()  # files of one table: columns matched by name, whatever their order
    (tmp_path / "parts" / "1.csv").write_text("f1,f2,target\n" + "".join(f"{i},{-i},{i % 2}\n" for i in range(20)))
    (tmp_path / "parts" / "2.csv").write_text("target,f2,f1\n" + "".join(f"{i % 2},{-i},{i}\n" for i in range(20)))
    arrays = data.load_arrays(FilesData(name="files", path=str(tmp_path / "parts"), label_column="target"), seed=0)
    assert arrays.feature_columns == ["f1", "f2"] and (arrays.x[:, 1] == -arrays.x[:, 0]).all()
    (tmp_path / "parts" / "3.csv").write_text("f1,target\n1,0\n")
    with pytest.raises(DataError, match="the data files differ in their columns"):
        data.load_arrays(FilesData(name="files", path=str(tmp_path / "parts"), label_column="target"), seed=0)


def test_evaluate_on_other_data_matches_the_model_by_column_and_label_name(ray_cluster, tmp_path):
    import torch

    from orchestrator.checkpoint import write_checkpoint
    from orchestrator.config import config_from_dict
    from orchestrator.evaluate import evaluate_on_data
    from orchestrator.models import build_model

    cfg = config_from_dict({"name": "t", "data": {"name": "files", "path": "train.csv", "label_column": "kind"},
                            "model": {"name": "mlp", "hidden_sizes": [8]}})
    torch.manual_seed(0)
    model = build_model(cfg.model, [2], 3)
    info = {"input_shape": [2], "label_names": ["a", "b", "c"], "feature_columns": ["w", "h"],
            "normalization": {}, "data_fingerprint": "x"}
    write_checkpoint(str(tmp_path / "ckpt"), model=model, config=cfg, model_info=info, metrics={})
    rng = np.random.default_rng(0)
    w, h, kind = rng.normal(size=60), rng.normal(size=60), np.array(["c", "b"] * 30)  # no 'a', columns reordered
    (tmp_path / "holdout.csv").write_text("kind,h,w\n" + "".join(f"{k},{b},{a}\n" for a, b, k in zip(w, h, kind)))
    with torch.no_grad():
        predicted = model.eval()(torch.tensor(np.stack([w, h], axis=1), dtype=torch.float32)).argmax(1).numpy()
    expected = float(np.mean(predicted == np.array([{"b": 1, "c": 2}[k] for k in kind])))
    result = evaluate_on_data(str(tmp_path / "ckpt"), str(tmp_path / "holdout.csv"))
    assert result["num_rows"] == 60 and result["metrics"]["accuracy"] == pytest.approx(expected, abs=1e-9)
    (tmp_path / "other.csv").write_text("kind,h,w\nd,1,2\nb,1,2\n")
    with pytest.raises(DataError, match=r"labels \['d'\] are not classes of this model"):
        evaluate_on_data(str(tmp_path / "ckpt"), str(tmp_path / "other.csv"))


def test_missing_user_data_is_a_clear_error(ray_cluster, tmp_path):
    from orchestrator.errors import DataError

    with pytest.raises(DataError, match="does not exist"):
        data.load_splits(FilesData(name="files", path=str(tmp_path / "none.parquet")), seed=0)
