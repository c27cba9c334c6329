"""Replay tune_efficiency's learning curves through FIFO, two ASHA rules and an oracle.

    python benchmarks/tune_replay.py benchmarks/results/tune_efficiency.json

tune_efficiency.py measures ASHA against FIFO in 10 seeds. How soon a search reaches the target
depends on where the first good configuration falls in the order drawn, so 10 seeds estimate
the expected time_to_target_ratio only loosely, and say nothing of what limits it. This replays
the learning curves of that run's FIFO trials (every one ran all its epochs) on a simple clock:
many seeds drawn afresh from those curves go through FIFO, through Ray's own ASHA stopping rule
(the bracket that ray.tune's ASHAScheduler applies, with the benchmark's settings), through ASHA
as its paper defines it (trials pause at each rung and only the best are promoted; Ray does not
ship it) and through an oracle that knows after one epoch which configurations will never reach
the target and stops them. The clock: a search's first epochs end `--first-report` seconds after it starts (the trial
processes' start: Ray's worker, the imports of Ray Tune and torch), every later epoch takes
`--epoch` seconds, and a trial that follows another in the same process starts `--between`
seconds after it. It leaves out that epochs vary and that trials compete for the CPUs, so it
estimates, and measures nothing. As a check, it also replays each measured seed in its own order
and prints how far the replayed FIFO and ASHA times are from the measured ones.
"""

from __future__ import annotations

import argparse
import heapq
import json
import random
import statistics
from types import SimpleNamespace

from ray.tune.schedulers.async_hyperband import _Bracket

from tune_efficiency import ASHA


def replay(curves: list[list[float]], rule: str, target: float, clock: dict, concurrency: int, asha: dict):
    """Seconds from the search's start until a trial first reaches `target` (None: never), trials
    started in order on `concurrency` processes, under rule "fifo", "asha" or "oracle"."""
    bracket = _Bracket(asha["grace_period"], asha["max_t"], asha["reduction_factor"], s=0) if rule == "asha" else None
    order, epoch_ends = iter(range(len(curves))), []  # heap of (seconds, process, trial, epoch)

    def start_next(process: int, first_epoch_ends: float) -> None:
        trial = next(order, None)
        if trial is not None:
            heapq.heappush(epoch_ends, (first_epoch_ends, process, trial, 1))

    for process in range(concurrency):
        start_next(process, clock["first_report"])
    while epoch_ends:
        now, process, trial, epoch = heapq.heappop(epoch_ends)
        accuracy = curves[trial][epoch - 1]
        if accuracy >= target:
            return now  # the heap gives epochs in time order: the first hit is the earliest
        stop = epoch >= len(curves[trial])
        if not stop and rule == "asha":
            stop = bracket.on_result(SimpleNamespace(trial_id=trial), epoch, accuracy) == "STOP"
        if not stop and rule == "oracle":
            stop = max(curves[trial]) < target
        if stop:
            start_next(process, now + clock["between"] + clock["epoch"])
        else:
            heapq.heappush(epoch_ends, (now + clock["epoch"], process, trial, epoch + 1))
    return None


def replay_promotion(curves: list[list[float]], target: float, clock: dict, concurrency: int, asha: dict):
    """Seconds until a trial first reaches `target` (None: never) under ASHA as its paper defines it
    (Li et al. 2020, Algorithm 2), which Ray does not ship (ray-project/ray#4401): every trial pauses at
    each rung, and a free process resumes the best paused trial among the top 1/reduction_factor of the
    highest rung that has one not yet promoted, else starts the next configuration. No trial is let through
    a rung for being the first there, as Ray's stopping rule does. Once every configuration has started,
    a free process resumes the best paused trial of the highest rung, so the search still ends. A paused
    trial resumes as a new trial starts in a used process (`between`): a lower bound on what pausing
    costs in Tune, which saves and restores the trial."""
    rf, max_t = asha["reduction_factor"], asha["max_t"]
    pauses = []  # the rungs' epochs, below max_t
    while (epoch := asha["grace_period"] * rf ** len(pauses)) < max_t:
        pauses.append(epoch)
    rungs = [{} for _ in pauses]  # per rung: trial -> accuracy there
    promoted = [set() for _ in pauses]
    order, epoch_ends, idle = iter(range(len(curves))), [], []  # heap of (seconds, process, trial, epoch, until)

    def best_paused(k: int, share_only: bool):
        ranked = sorted(rungs[k], key=lambda t: -rungs[k][t])  # stable: the earlier trial first on a tie
        candidates = ranked[:len(ranked) // rf] if share_only else ranked
        return next((t for t in candidates if t not in promoted[k]), None)

    def take_job(process: int, now: float, first_epoch_ends: float) -> bool:
        for share_only in (True, False):
            for k in reversed(range(len(pauses))):
                if (trial := best_paused(k, share_only)) is not None:
                    promoted[k].add(trial)
                    until = pauses[k + 1] if k + 1 < len(pauses) else max_t
                    heapq.heappush(epoch_ends, (now + clock["between"] + clock["epoch"], process, trial, pauses[k] + 1,
                                                until))
                    return True
            if share_only and (trial := next(order, None)) is not None:
                heapq.heappush(epoch_ends, (first_epoch_ends, process, trial, 1, pauses[0] if pauses else max_t))
                return True
        return False

    for process in range(concurrency):
        take_job(process, 0.0, clock["first_report"])
    while epoch_ends:
        now, process, trial, epoch, until = heapq.heappop(epoch_ends)
        accuracy = curves[trial][epoch - 1]
        if accuracy >= target:
            return now
        if epoch < min(until, len(curves[trial])):
            heapq.heappush(epoch_ends, (now + clock["epoch"], process, trial, epoch + 1, until))
            continue
        if epoch in pauses and epoch < len(curves[trial]):
            rungs[pauses.index(epoch)][trial] = accuracy
        # this process, and any idle one: a trial paused just now may be the one to resume
        idle = [p for p in [process, *idle] if not take_job(p, now, now + clock["between"] + clock["epoch"])]
    return None


def expected_ratios(pool, draws: int, num_samples: int, target: float, clock: dict, concurrency: int, asha: dict,
                    group: int = 10) -> dict:
    """ASHA / FIFO and oracle / FIFO, of the mean times over `draws` seeds drawn from `pool`; the
    spread of that ratio over groups of `group` seeds (what one benchmark run sees); the share of
    seeds where ASHA stopped every configuration that would have reached the target."""
    rng, times, lost = random.Random(0), [], 0
    for _ in range(draws):
        curves = [rng.choice(pool) for _ in range(num_samples)]
        fifo, early, oracle = (replay(curves, rule, target, clock, concurrency, asha) for rule in ("fifo", "asha", "oracle"))
        if fifo is None:
            continue  # no configuration drawn reaches the target: left out, as in the benchmark
        if early is None:
            lost += 1
            continue
        # promotion never loses the target: a trial that reaches it at max_t gets there once the others are done
        times.append((early, oracle, replay_promotion(curves, target, clock, concurrency, asha), fifo))
    if not times:
        return {"asha": None, "oracle": None, "asha_lost_share": None}  # no seed drew a configuration that gets there
    ratio = lambda rows, k: round(sum(r[k] for r in rows) / sum(r[-1] for r in rows), 3)  # noqa: E731
    groups = sorted(ratio(times[i:i + group], 0) for i in range(0, len(times) - group + 1, group))
    return {
        "asha": ratio(times, 0),
        "oracle": ratio(times, 1),
        "asha_promotion": ratio(times, 2),
        f"asha_{group}_seeds_p5_p95": [groups[len(groups) // 20], groups[-len(groups) // 20 - 1]] if groups else None,
        "asha_lost_share": round(lost / (len(times) + lost), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("results", help="the JSON line that tune_efficiency.py printed last (its file)")
    parser.add_argument("--first-report", type=float, default=None,
                        help="seconds to a search's first epoch; default: the run's median first_report_s")
    parser.add_argument("--epoch", type=float, default=0.19, help="seconds per epoch, 2 trials at a time on 2 cores "
                        "(0.16-0.20 each; 0.19 replays the measured FIFO seeds closest)")
    parser.add_argument("--between", type=float, default=0.04, help="seconds between trials in one process")
    parser.add_argument("--target", type=float, default=None, help="default: the run's target validation accuracy")
    parser.add_argument("--draws", type=int, default=5000)
    args = parser.parse_args()

    try:
        with open(args.results) as f:
            run = json.loads(f.read().strip().splitlines()[-1])
        fifo_runs = run["runs"]["fifo"]
    except (OSError, ValueError, IndexError, KeyError, TypeError) as e:
        parser.error(f"{args.results}: not the JSON line that tune_efficiency.py prints last ({e!r})")
    if not fifo_runs or "curves" not in fifo_runs[0]:
        parser.error(f"{args.results} has no learning curves: rerun benchmarks/tune_efficiency.py")
    target = args.target if args.target is not None else run["target_val_accuracy"]
    concurrency, asha = run["concurrency"], {**ASHA, "max_t": run["max_epochs"]}
    first_report = args.first_report if args.first_report is not None else run["first_report_s_median"]
    clock = {"first_report": first_report, "epoch": args.epoch,
             "between": args.between}
    pool = [curve for r in fifo_runs for curve in r["curves"]]

    def off_by(scheduler: str) -> float:  # mean |replayed - measured| over the measured seeds, in their own order
        measured = [r["time_to_target_s"] if target == run["target_val_accuracy"] else r["time_to_s"].get(str(target))
                    for r in run["runs"][scheduler]]
        pairs = [(replay(f["curves"], scheduler, target, clock, concurrency, asha), m)
                 for m, f in zip(measured, fifo_runs)]  # ASHA's trials were FIFO's, cut short
        gaps = [abs(a - b) for a, b in pairs if a is not None and b is not None]
        return round(statistics.mean(gaps), 2) if gaps else None

    out = {
        "benchmark": "tune_replay",
        "target_val_accuracy": target,
        "configurations": len(pool),
        "target_share": round(sum(max(c) >= target for c in pool) / len(pool), 4),
        "clock": clock,
        "expected_ratio": expected_ratios(pool, args.draws, run["num_samples"], target, clock, concurrency, asha),
        # the same, with a search's first epoch as quick as any other: what the trial processes' start costs
        "expected_ratio_without_start": expected_ratios(pool, args.draws, run["num_samples"], target,
                                                        {**clock, "first_report": clock["epoch"]}, concurrency, asha),
        "replayed_off_by_s": {"fifo": off_by("fifo"), "asha": off_by("asha")},
    }
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
