"""benchmarks/tune_replay.py: its clock and its four rules, on curves worked out by hand."""

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


def test_promotion_asha_pauses_every_trial_at_each_rung_and_resumes_only_the_best():
    # one process: FAIR pauses at rung 1 (3.0), alone there, so BAD starts (epoch ends 4.5), then GOOD (6.0). Rung 1
    # now holds 3 trials: its best third, GOOD, resumes (7.5, 8.5: the target). Ray's rule takes 16 (above): it
    # let FAIR through every rung for being the first there.
    assert tune_replay.replay_promotion([FAIR, BAD, GOOD], 0.98, CLOCK, 1, ASHA) == 8.5
    # LATE gets there only at max_t: once every configuration has started, the best paused trial of the highest
    # rung resumes (LATE at rung 3: 8.5 + 0.5 + 1, then 5 epochs), so no configuration is ever lost
    late = [0.5] * 8 + [0.99]
    assert tune_replay.replay_promotion([FAIR, BAD, late], 0.98, CLOCK, 1, ASHA) == 15.0
    # two processes: GOOD pauses at rung 1 beside FAIR (3.0); neither is in the best third of 2 trials, so BAD
    # starts, and then GOOD, the best paused, resumes: its pause costs `between` (5.5, against 5.0 above)
    assert tune_replay.replay_promotion([FAIR, GOOD, BAD], 0.98, CLOCK, 2, ASHA) == 5.5
    assert tune_replay.replay_promotion([FAIR, BAD], 0.98, CLOCK, 1, ASHA) is None


def test_a_file_that_is_not_a_benchmark_result_exits_2_saying_so(tmp_path, capsys, monkeypatch):
    other = tmp_path / "other.json"
    other.write_text('{"benchmark": "serve_throughput"}\n')
    monkeypatch.setattr(sys, "argv", ["tune_replay.py", str(other)])
    with pytest.raises(SystemExit) as exit_:
        tune_replay.main()
    assert exit_.value.code == 2 and "not the JSON line that tune_efficiency.py prints last" in capsys.readouterr().err
