"""Ray Jobs from a laptop: ship this checkout, run an orchestrator command on the cluster, follow it.

    orchestrator cluster dashboard cluster/aws-gpu.yaml            # tunnel: 127.0.0.1:8265
    orchestrator submit jobs/digits-cnn.yaml --address http://127.0.0.1:8265 --wait
    orchestrator submit jobs/digits.yaml --address http://127.0.0.1:8265 run   # the whole pipeline
    orchestrator logs JOB_ID --follow | status JOB_ID | stop JOB_ID | list

The Jobs API runs code on the cluster, so it sits behind Ray's token auth: the token comes from
RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token and travels as a bearer header.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import os
import shlex
from pathlib import Path

from orchestrator.errors import ConfigError, UserError
from orchestrator.lineage import CODE_VERSION_ENV, code_version
from orchestrator.runtime import quiet_env

# Shipped code only: version control, environments, outputs and data stay home.
EXCLUDES = [".git", ".venv", "venv", "env", "runs", "data", "__pycache__", "*.pyc", "*.egg-info", ".pytest_cache",
            ".ruff_cache", ".devwheels", ".devstage", "*.safetensors", "*.parquet", "*.feather",
            "*.arrow", "*.npz", "*.ckpt", "*.pt"]
# Ray documents 500 MiB for a runtime-env package; uploads fail well below that in practice
# (ray-project/ray issue 55877), so refuse early and say what to exclude.
UPLOAD_LIMIT = 100 * 2**20
COMMANDS = ("train", "tune", "run")


class AuthError(UserError):
    pass


def auth_headers() -> dict:
    token = os.environ.get("RAY_AUTH_TOKEN")
    if not token:
        path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH", "~/.ray/auth_token")).expanduser()
        token = path.read_text().strip() if path.is_file() else ""
    return {"Authorization": f"Bearer {token}"} if token else {}


def client(address: str):
    from ray.job_submission import JobSubmissionClient

    if not address.startswith(("http://", "https://")):
        raise ConfigError(f"--address {address!r}: give the dashboard URL, e.g. http://127.0.0.1:8265 "
                          "(through `orchestrator cluster dashboard FILE`)")
    try:
        return JobSubmissionClient(address, headers=auth_headers())
    except Exception as e:  # Ray raises RuntimeError/ConnectionError with the HTTP detail in the text
        raise _explain(e, address) from None


def _explain(e: Exception, address: str) -> UserError:
    text = str(e)
    if "401" in text or "Unauthorized" in text:
        return AuthError(f"{address} requires a Ray auth token: set RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH, or "
                         "copy the cluster's token to ~/.ray/auth_token")
    if "403" in text or "Forbidden" in text:
        return AuthError(f"{address} refused the Ray auth token: it is not this cluster's token")
    if "Failed to connect" in text or "Connection refused" in text or "Cannot connect" in text:
        return ConfigError(f"cannot reach the Jobs API at {address}: is the cluster up and the tunnel open "
                           "(`orchestrator cluster dashboard FILE`)?")
    return UserError(f"{address}: {text.strip().splitlines()[0]}")


def exclusion(relative: str) -> str | None:
    """The EXCLUDES pattern that keeps a path (relative to the shipped root) home, or None: it is shipped."""
    return next((pattern for part in Path(relative).parts for pattern in EXCLUDES if fnmatch.fnmatch(part, pattern)),
                None)


def excluded(relative: str) -> bool:
    return exclusion(relative) is not None


def check_data_path(data_path: str | None, root: Path) -> None:
    """A local data.path the job cannot read on the cluster: a note where the cluster's own disk may hold
    it (outside the shipped directory), an error where it cannot (inside, but never shipped)."""
    if not data_path or "://" in data_path:
        return
    where = (root / data_path).resolve()
    if not where.is_relative_to(root):
        print(f"note: data.path {data_path!r} is outside the shipped directory, so the job reads it from the "
              "cluster's own disk: put it on s3:// (submit ships code, not data)", flush=True)
        return
    files = [where] if not where.is_dir() else sorted(f for f in where.rglob("*") if f.is_file())
    for f in files:
        if pattern := exclusion(str(f.relative_to(root))):
            raise ConfigError(f"data.path {data_path!r} would not reach the cluster: submit never ships {pattern!r} "
                              f"({f.relative_to(root)}; code only, data stays home), so the job would not find it. "
                              "Put the data on s3:// (data.path=s3://BUCKET/KEY)")


def package(root: Path) -> tuple[int, dict[str, int]]:
    """Bytes that would be uploaded, and bytes per top-level entry (to say what to exclude)."""
    total, by_top = 0, {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        dirnames[:] = [d for d in dirnames if not excluded(os.path.join(rel_dir, d))]
        for name in filenames:
            rel = os.path.normpath(os.path.join(rel_dir, name))
            if excluded(rel):
                continue
            size = os.path.getsize(os.path.join(dirpath, name))
            total += size
            top = Path(rel).parts[0]
            by_top[top] = by_top.get(top, 0) + size
    return total, by_top


def submit(config: str, overrides: list[str], address: str, command: str = "train", gpus: float = 0,
           cpus: float | None = None, root: Path | None = None, limit: int = UPLOAD_LIMIT,
           flags: list[str] = ()) -> dict:
    """Ship `root` (default: here) and run `orchestrator COMMAND CONFIG OVERRIDES FLAGS` on the cluster."""
    from orchestrator.config import load_config

    cfg = load_config(config, overrides)  # a bad config fails here, not on the cluster
    root = (root or Path.cwd()).resolve()
    try:
        config_arg = str(Path(config).resolve().relative_to(root))
    except ValueError:
        raise ConfigError(f"{config} is outside the directory that is shipped ({root}): run from the project root") from None
    check_data_path(getattr(cfg.data, "path", None), root)
    size, by_top = package(root)
    if size > limit:
        biggest = ", ".join(f"{k} ({v / 2**20:.1f} MiB)" for k, v in sorted(by_top.items(), key=lambda kv: -kv[1])[:5])
        raise ConfigError(f"the working directory is {size / 2**20:.1f} MiB, over the {limit / 2**20:.0f} MiB upload "
                          f"limit: move data to s3:// and exclude the largest entries: {biggest}")
    print(f"shipping {root} ({size / 2**20:.2f} MiB, excluding {', '.join(EXCLUDES[:6])}, ...)", flush=True)
    if "://" not in cfg.storage.path:
        print(f"note: storage.path {cfg.storage.path!r} is on the cluster's disk; use s3:// or gs:// to keep "
              "checkpoints beyond the cluster", flush=True)
    entrypoint = shlex.join(["python", "-m", "orchestrator.cli", command, config_arg, *overrides, *flags,
                             "--address", "auto", "--json"])
    jobs = client(address)
    try:
        job_id = jobs.submit_job(
            entrypoint=entrypoint,
            # the shipped copy has no .git: the lineage's code version is measured here
            runtime_env={"working_dir": str(root), "excludes": EXCLUDES,
                         "env_vars": {CODE_VERSION_ENV: json.dumps(code_version()), **quiet_env({})}},
            entrypoint_num_gpus=gpus or None,
            entrypoint_num_cpus=cpus,
            metadata={"submitted_by": "orchestrator", "config": config_arg},
        )
    except Exception as e:
        raise _explain(e, address) from None
    print(f"submitted {job_id}: {entrypoint}\nnext: orchestrator logs {job_id} --follow --address {address}", flush=True)
    return {"job_id": job_id, "address": address, "entrypoint": entrypoint, "package_bytes": size}


def follow(job_id: str, address: str) -> str:
    """Print the job's logs as they come until it ends; its final status."""
    jobs = client(address)

    async def tail():
        async for lines in jobs.tail_job_logs(job_id):
            print(lines, end="", flush=True)

    try:
        asyncio.run(tail())
        return str(jobs.get_job_status(job_id).value)
    except Exception as e:
        raise _explain(e, address) from None


def call(address: str, method: str, *args):
    jobs = client(address)
    try:
        return getattr(jobs, method)(*args)
    except Exception as e:
        if "does not exist" in str(e) or "404" in str(e):
            raise ConfigError(f"no job {args[0]!r} on {address} (see `orchestrator list --address {address}`)") from None
        raise _explain(e, address) from None
