"""Training under injected faults, on the shared local Ray: a DDP worker SIGKILLed at a seeded
random moment, and more failures than the budget allows.

CI runs 1 seeded kill; ORCHESTRATOR_SOAK=1 runs 5 (and more epochs)."""

import os
import random
import signal
import threading
import time

import psutil
import pytest

from orchestrator.checkpoint import read_checkpoint
from orchestrator.config import load_config
from orchestrator.train import train
from tests.conftest import MARKER, ROOT, marked_pids

pytestmark = [pytest.mark.ray, pytest.mark.reliability]
SOAK = os.environ.get("ORCHESTRATOR_SOAK") == "1"
SEEDS = range(5) if SOAK else range(1)
EPOCHS = 10 if SOAK else 8


def config(tmp_path, name: str, max_failures: int):
    return load_config(ROOT / "jobs" / "digits-mlp.yaml", [
        f"storage.path={tmp_path}", f"train.run_name={name}", "train.num_workers=2", f"train.epochs={EPOCHS}",
        f"train.max_failures={max_failures}"])


def train_workers() -> list[int]:
    """PIDs of this session's Ray Train worker processes."""
    pids = []
    for pid in marked_pids(MARKER):
        try:
            if "RayTrainWorker" in " ".join(psutil.Process(pid).cmdline()):
                pids.append(pid)
        except psutil.Error:
            pass
    return sorted(pids)


def kill_a_worker_during(run_dir, seed: int, record: dict) -> threading.Thread:
    """After a seeded random epoch's checkpoint, wait a seeded random moment into the next epochs
    (an epoch takes about 0.3 s here), then SIGKILL one worker."""
    rng = random.Random(seed)
    after_epoch, delay_s = rng.randint(1, EPOCHS - 3), rng.uniform(0.0, 0.3)

    def killer():
        deadline = time.time() + 180
        while not (run_dir / f"epoch-{after_epoch:04d}" / "manifest.json").exists() and time.time() < deadline:
            time.sleep(0.01)
        time.sleep(delay_s)
        pids = train_workers()
        finished = sorted(int(p.parent.name.split("-")[1]) for p in run_dir.glob("epoch-*/manifest.json"))
        if pids:
            victim = rng.choice(pids)
            os.kill(victim, signal.SIGKILL)
            record.update(pid=victim, last_epoch=finished[-1] if finished else 0, at=time.time())

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    return thread


def test_a_killed_worker_resumes_from_the_last_checkpoint_and_ends_as_accurate(ray_cluster, tmp_path):
    baseline = train(config(tmp_path, "baseline", 0)).metrics["test_accuracy"]
    rows = []
    for seed in SEEDS:
        name, record = f"kill-{seed}", {}
        thread = kill_a_worker_during(tmp_path / name, seed, record)
        result = train(config(tmp_path, name, 2))
        thread.join(timeout=5)
        assert record, f"seed {seed}: no worker was killed (the run ended first?)"
        assert not psutil.pid_exists(record["pid"]) or psutil.Process(record["pid"]).status() == psutil.STATUS_ZOMBIE
        latest = read_checkpoint(str(tmp_path / name / f"epoch-{EPOCHS:04d}")).train_state()
        # Ray registers a checkpoint a moment after the files land: resume is from the last one seen or the next
        assert record["last_epoch"] <= latest["start_epoch"] <= record["last_epoch"] + 1, (record, latest["start_epoch"])
        assert [h["epoch"] for h in latest["history"]] == list(range(1, EPOCHS + 1))  # every epoch once
        kept = sorted(p.name for p in (tmp_path / name).glob("epoch-*"))
        assert all((tmp_path / name / k / "manifest.json").exists() for k in kept), kept
        # num_to_keep 2, best by val_accuracy, and the latest whatever its score (Ray resumes from it)
        val = {h["epoch"]: h["val_accuracy"] for h in latest["history"]}
        best = [e for e in (int(k.split("-")[1]) for k in kept) if e != EPOCHS]
        pruned = set(val) - set(best) - {EPOCHS}
        assert f"epoch-{EPOCHS:04d}" in kept and len(kept) in (2, 3), kept
        assert min(val[e] for e in best) >= max(val[e] for e in pruned), (kept, val)
        accuracy = result.metrics["test_accuracy"]
        rows.append((seed, record["last_epoch"], latest["start_epoch"], accuracy))
        assert abs(accuracy - baseline) <= 0.01, f"seed {seed}: {accuracy:.4f} against {baseline:.4f} uninterrupted"
    print(f"worker kills: {len(rows)} runs, baseline test_accuracy {baseline:.4f}; "
          + "; ".join(f"seed {s}: killed after epoch {k}, resumed at {r + 1}, test_accuracy {a:.4f}"
                      for s, k, r, a in rows))


def test_more_failures_than_the_budget_fail_fast_and_leave_nothing_behind(ray_cluster, tmp_path):
    from ray.train.v2.api.exceptions import TrainingFailedError

    record = {}
    kill_a_worker_during(tmp_path / "budget", 7, record)
    started = time.time()
    with pytest.raises(TrainingFailedError) as failed:
        train(config(tmp_path, "budget", 0))
    failed_after = time.time() - record["at"]
    assert failed_after < 60, f"took {failed_after:.0f}s to fail after the kill"
    deadline = time.time() + 30  # the worker group and its CPUs are released
    while (train_workers() or ray_cluster.available_resources().get("CPU", 0) < ray_cluster.cluster_resources()["CPU"]) \
            and time.time() < deadline:
        time.sleep(0.5)
    assert train_workers() == []
    assert ray_cluster.available_resources().get("CPU", 0) == ray_cluster.cluster_resources()["CPU"]
    print(f"failure budget: failed {failed_after:.1f}s after the kill ({time.time() - started:.0f}s in all); "
          f"message: {str(failed.value).splitlines()[0][:160]}")
