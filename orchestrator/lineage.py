"""Where a model came from: its config, data, code and environment.

The driver collects the part that is the same for every checkpoint of a run (data, code,
versions); the training loop stamps each checkpoint with its own config hash, run, trial
and epoch and seals it into the checkpoint as lineage.json. Registry versions copy it, and
the endpoint's GET /v1/model returns it.

The code version is the git commit (and whether the tree had uncommitted changes) of the
checkout the package runs from, or the package version when it is installed without git.
A job shipped to a cluster has no .git: `orchestrator submit` measures the code version on
the laptop and passes it in ORCHESTRATOR_CODE_VERSION.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
from pathlib import Path

from orchestrator.config import DigitsData, ExperimentConfig, SyntheticData

CODE_VERSION_ENV = "ORCHESTRATOR_CODE_VERSION"


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def code_version() -> dict:
    """{"code_version": "git:<commit12>[-dirty]" or "package:<version>", "git_commit", "git_dirty", "package_version"}."""
    if os.environ.get(CODE_VERSION_ENV):
        return json.loads(os.environ[CODE_VERSION_ENV])
    import orchestrator

    out = {"code_version": f"package:orchestrator=={orchestrator.__version__}", "git_commit": None, "git_dirty": None,
           "package_version": orchestrator.__version__}
    root = Path(orchestrator.__file__).resolve().parent.parent
    try:
        commit = _git(root, "rev-parse", "HEAD")
        dirty = bool(_git(root, "status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):  # no git, or not a checkout
        return out
    return {**out, "code_version": f"git:{commit[:12]}{'-dirty' if dirty else ''}", "git_commit": commit,
            "git_dirty": dirty}


def _git(root: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10, check=True)
    return done.stdout.strip()


def data_uri(cfg: ExperimentConfig) -> str:
    d = cfg.data
    if isinstance(d, DigitsData):
        return "sklearn:load_digits"
    if isinstance(d, SyntheticData):
        return (f"synthetic:num_samples={d.num_samples},feature_shape={d.feature_shape},"
                f"num_classes={d.num_classes},class_separation={d.class_separation},seed={cfg.seed}")
    return d.path


def versions() -> dict:
    import ray
    import torch

    import orchestrator

    return {"python": platform.python_version(), "torch": torch.__version__, "ray": ray.__version__,
            "orchestrator": orchestrator.__version__}


def collect(cfg: ExperimentConfig, data_fingerprint: str, **extra) -> dict:
    """The run-wide part, measured in the driver."""
    return {
        "experiment": cfg.name,
        "data_uri": data_uri(cfg),
        "data_fingerprint": data_fingerprint,
        **code_version(),
        "versions": versions(),
        "started_at": now(),
        **extra,
    }


def stamp(base: dict, cfg: ExperimentConfig, run: str, trial_id: str | None, epoch: int) -> dict:
    """The lineage of one checkpoint: the run-wide part plus what this checkpoint alone has."""
    return {**base, "config_hash": cfg.hash(), "run": run, "trial_id": trial_id, "epoch": epoch, "written_at": now()}
