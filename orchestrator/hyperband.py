"""Ray Tune's HyperBand, less a hang: a trial at its bracket's last milestone is stopped there, not paused.

Ray pauses a trial that reaches a milestone before the rest of its bracket. At the last milestone (no
halvings left) a paused trial can only ever be stopped: Ray stops it when the bracket's last trial
arrives. Two paths skip that stop; the paused trial then never ends, and neither does the search (its
controller spins on):
- the paused trial is still saving its pause checkpoint (RUNNING, not yet PAUSED) when the last trial
  arrives, and `_Bracket.cleanup_full` stops PAUSED trials only. Seen in CI, and here in 1 of 16 fresh
  runs of the 5-trial search of tests/ray/test_tune.py, Ray's debug log showing these very steps;
- the last trial ends without reaching the milestone (an error, train.early_stopping_patience), and
  `on_trial_remove` finds the bracket finished and processes nothing.
Stopping the trial at the last milestone is what Ray would do in the end, less the pause's checkpoint
and the wait. Ray is pinned below 2.61 (pyproject.toml): the private names used here are 2.60's.
"""

from ray.tune.schedulers import HyperBandScheduler, TrialScheduler


class HyperBand(HyperBandScheduler):
    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        bracket, _ = self._trial_info[trial]
        last_milestone = (bracket.stop_last_trials and bracket._halves == 0
                          and result[self._time_attr] >= bracket._cumul_r)
        if not last_milestone:
            return super().on_trial_result(tune_controller, trial, result)
        bracket.update_trial_stats(trial, result)
        bracket.cleanup_trial(trial)
        return TrialScheduler.STOP
