"""HyperBand as orchestrator runs it: a trial at its bracket's last milestone stops there; it never waits paused."""

from ray.tune.experiment import Trial
from ray.tune.schedulers import HyperBandScheduler, TrialScheduler

from orchestrator.hyperband import HyperBand


def _bracketed(scheduler_class, num_trials: int) -> tuple:
    # max 3 epochs, reduction 3: a bracket of 2 trials that run 3 epochs, then one of 3 that keeps 1 after epoch 1
    scheduler = scheduler_class(time_attr="epoch", metric="val_accuracy", mode="max", max_t=3, reduction_factor=3)
    trials = [Trial("trial", stub=True) for _ in range(num_trials)]
    for t in trials:
        scheduler.on_trial_add(None, t)
    return scheduler, trials


def _epoch(n: int, accuracy: float) -> dict:
    return {"epoch": n, "val_accuracy": accuracy}


def test_a_trial_at_the_last_milestone_of_its_bracket_is_stopped_while_the_rest_still_run():
    ray_alone, (a, _) = _bracketed(HyperBandScheduler, 2)
    for n in (1, 2):
        ray_alone.on_trial_result(None, a, _epoch(n, 0.5))
    # Ray pauses it until its bracket-mate arrives, and may never stop it (see orchestrator/hyperband.py)
    assert ray_alone.on_trial_result(None, a, _epoch(3, 0.9)) == TrialScheduler.PAUSE

    scheduler, (a, b, c, d, _) = _bracketed(HyperBand, 5)
    for n in (1, 2):
        assert scheduler.on_trial_result(None, a, _epoch(n, 0.5)) == TrialScheduler.CONTINUE
    assert scheduler.on_trial_result(None, a, _epoch(3, 0.9)) == TrialScheduler.STOP
    for n in (1, 2):
        assert scheduler.on_trial_result(None, b, _epoch(n, 0.4)) == TrialScheduler.CONTINUE
    assert scheduler.on_trial_result(None, b, _epoch(3, 0.8)) == TrialScheduler.STOP
    # before a bracket's last milestone, trials still wait paused for the rest of theirs, as in Ray
    assert scheduler.on_trial_result(None, c, _epoch(1, 0.3)) == TrialScheduler.PAUSE
    assert scheduler.on_trial_result(None, d, _epoch(1, 0.2)) == TrialScheduler.PAUSE
