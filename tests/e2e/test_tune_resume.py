"""A search whose driver is killed resumes with --resume: finished trials are not run again."""

import json
import queue
import threading
import time
import uuid

import pytest

from tests.conftest import kill_marked
from tests.e2e.test_main_command import cli, finish

pytestmark = pytest.mark.e2e


@pytest.mark.reliability
def test_killed_search_resumes_without_rerunning_finished_trials(tmp_path):
    marker = f"e2e-{uuid.uuid4().hex[:8]}"
    args = ["tune", "jobs/digits-tune.yaml", f"storage.path={tmp_path}", "tune.num_samples=6", "train.epochs=6",
            "tune.scheduler.name=fifo"]
    proc = cli(*args, marker=marker)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    finished, deadline = 0, time.time() + 300
    while finished < 2 and time.time() < deadline and proc.poll() is None:
        try:
            finished += "epoch   6/6" in lines.get(timeout=1)
        except queue.Empty:
            pass
    assert finished >= 2, "two trials never finished"
    time.sleep(3)  # Tune snapshots its experiment state every few seconds
    kill_marked(marker)
    proc.wait(timeout=30)
    while not lines.empty():  # trials that finished in the last moments before the kill
        finished += "epoch   6/6" in lines.get()

    code, out = finish(cli(*args, "--resume", "--json", marker=marker), marker)
    assert code == 0, "\n".join(out[-40:])
    result = json.loads(out[-1])
    completed_after_resume = sum("epoch   6/6" in line for line in out)
    print(f"finished before the kill: {finished}, completed after resume: {completed_after_resume}")
    assert result["num_trials"] == 6 and result["num_stopped_early"] == 0
    assert completed_after_resume <= 6 - 2  # the trials that had finished were not run again
    assert result["best_metrics"]["test_accuracy"] > 0.9
