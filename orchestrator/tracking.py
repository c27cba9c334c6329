"""Experiment tracking: TensorBoard event files for every training run, MLflow when asked for.

Tune trials get TensorBoard files from Tune itself (its TBXLoggerCallback, in each trial's
directory). Training runs write theirs here, from rank 0, as each epoch ends:

    tensorboard --logdir runs/            # every run and trial under the storage root
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from orchestrator import storage
from orchestrator.errors import ConfigError


class TensorBoard:
    """Scalars per epoch under <run>/tensorboard. On s3:// or gs:// the event file is written
    locally and uploaded after every epoch, so it can be watched while the run goes on."""

    def __init__(self, uri: str, endpoint_url: str | None = None, region: str | None = None):
        from tensorboardX import SummaryWriter  # a dependency of ray[tune]

        self.uri, self.endpoint_url, self.region = uri, endpoint_url, region
        self.remote = storage.is_remote(uri)
        self.local = tempfile.mkdtemp(prefix="tb-") if self.remote else uri
        self.writer = SummaryWriter(self.local)

    def log(self, metrics: dict, step: int) -> None:
        for key, value in metrics.items():
            if key != "epoch" and isinstance(value, (int, float)):
                self.writer.add_scalar(key.replace("_", "/", 1) if key.startswith(("train_", "val_")) else key,
                                       value, step)
        self.writer.flush()
        if self.remote:
            for f in Path(self.local).iterdir():
                storage.write_bytes(storage.join(self.uri, f.name), f.read_bytes(), self.endpoint_url, self.region)


def check_mlflow(cfg) -> None:
    """Before anything starts: tracking.mlflow asks for a package that must be there."""
    if cfg.tracking.mlflow:
        try:
            import mlflow  # noqa: F401
        except ImportError:
            raise ConfigError("tracking.mlflow is true but mlflow is not installed: pip install mlflow "
                              "(or set tracking.mlflow=false)") from None


def log_mlflow(cfg, run: str, metrics: dict, lineage: dict, artifacts_dir: str | None) -> str | None:
    """One MLflow run with the config, test metrics, lineage and the report; its run id. A tracking
    server that fails is a warning: the run itself is already saved."""
    if not cfg.tracking.mlflow:
        return None
    import mlflow

    t = cfg.tracking
    try:
        if t.mlflow_tracking_uri:
            mlflow.set_tracking_uri(t.mlflow_tracking_uri)
        mlflow.set_experiment(t.mlflow_experiment or cfg.name)
        with mlflow.start_run(run_name=run) as active:
            mlflow.log_params({k: str(v)[:500] for k, v in _flat(cfg.to_dict()).items()})
            mlflow.log_metrics({k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))})
            mlflow.set_tags({f"lineage.{k}": str(v)[:500] for k, v in lineage.items() if not isinstance(v, dict)})
            if artifacts_dir and os.path.isdir(artifacts_dir):
                mlflow.log_artifacts(artifacts_dir, artifact_path="report")
            return active.info.run_id
    except Exception as e:  # MlflowException, connection errors: say so, keep the run
        print(f"warning: MLflow logging failed ({str(e).splitlines()[0][:300]}); the run is saved as it is",
              file=sys.stderr, flush=True)
        return None


def _flat(d: dict, prefix: str = "") -> dict:
    """{"optim": {"lr": 0.1}} -> {"optim.lr": 0.1}: config fields as MLflow params."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
