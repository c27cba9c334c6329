"""benchmarks/tune_replay.py: its clock and its three rules, on curves worked out by hand."""

import sys

import pytest

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))  # as `python benchmarks/tune_replay.py` runs it
import tune_replay  # noqa: E402

CLOCK = {"first_report": 3.0, "epoch": 1.0, "between": 0.5}
ASHA = {"grace_period": 1, "reduction_factor": 3, "max_t": 9}  # rungs at 1, 3 and 9 epochs
FAIR, BAD, GOOD = [0.3] * 9, [0.1] * 9, [0.5, 0.8, 0.99] + [0.99] * 6  # GOOD reaches 0.98 at its 3rd epoch


def times(curves, concurrency=1):
    return {rule: tune_replay.replay(curves, rule, 0.98, CLOCK, concurrency, ASHA) for rule in ("fifo", "asha", "oracle")}


def test_one_process_fifo_asha_and_the_oracle():
    # FIFO: FAIR's 9 epochs end at 11, BAD's at 20.5 (its first at 11 + 0.5 + 1), GOOD's 3rd at 24.
    # Ray's ASHA: FAIR is the first at every rung, so it runs all 9 epochs; BAD is under FAIR at rung 1 and
    # stops at 12.5; GOOD's 1st epoch ends at 14 and its 3rd at 16. The oracle stops FAIR and BAD after one epoch.
    assert times([FAIR, BAD, GOOD]) == {"fifo": 24.0, "asha": 16.0, "oracle": 8.0}


def test_concurrent_processes_and_a_search_that_never_gets_there():
    # two processes: GOOD starts with FAIR, so every rule reaches the target at GOOD's 3rd epoch
    assert times([FAIR, GOOD, BAD], concurrency=2) == {"fifo": 5.0, "asha": 5.0, "oracle": 5.0}
    assert times([FAIR, BAD]) == {"fifo": None, "asha": None, "oracle": None}


def test_a_file_that_is_not_a_benchmark_result_exits_2_saying_so(tmp_path, capsys, monkeypatch):
    other = tmp_path / "other.json"
    other.write_text('{"benchmark": "serve_throughput"}\n')
    monkeypatch.setattr(sys, "argv", ["tune_replay.py", str(other)])
    with pytest.raises(SystemExit) as exit_:
        tune_replay.main()
    assert exit_.value.code == 2 and "not the JSON line that tune_efficiency.py prints last" in capsys.readouterr().err
