"""A measured sweep replayed under other ASHA settings: its own trials, epochs and scores.

`asha_budget.py` models a sweep from average costs and invented scores; this replays one that
ran. It reads a `pipeline tune` sweep from MLflow (the parent run and its child runs): each
trial's per-epoch `epoch_seconds` and score (`tune.metric`), its start-up and tail (the run's
life less its epochs), and Tune's gap between one trial's end and the next one's start. It
then runs the same trials, in the same order, `--slots` at a time (the sweep's
`max_concurrent_trials`), through Ray Tune's asynchronous successive-halving rule as the
pipeline configures it (`ASHAScheduler(time_attr="epoch", max_t=asha_max_t(epochs),
grace_period, reduction_factor)`, `pipeline.stages.tune`): rungs at grace * rf**k, a trial
stops at a rung when its score is below the (1 - 1/rf) quantile of the scores recorded there
before it). The replay of the sweep's own
setting is the check: its minutes against the measured wall time, and the same stops.

Exact where a setting stops every trial no later than the measured sweep did (a larger
reduction factor, a later grace period never); where it would train a trial beyond its
measured epochs, that trial's later scores are unknown: the replay keeps its last score and
counts the decision in `extrapolated`.

    python benchmarks/asha_replay.py     # the newest sweep in the pipeline's store (mlflow.db)
    python benchmarks/asha_replay.py --rf 4 8 16 --tracking-uri sqlite:///other/mlflow.db

Prints one JSON line: the measured sweep and, per reduction factor, the replayed minutes,
epochs trained, stop epochs, the best score reached and whether its trial is the measured
sweep's best.
"""

from __future__ import annotations

import argparse
import heapq
import json
import statistics
from dataclasses import dataclass, field

import numpy as np

from pipeline.stages.tune import asha_max_t
from pipeline.tracking import sqlite_file, tracking_uri


@dataclass
class Trial:
    """One measured trial: its per-epoch seconds and scores (higher is better) and the seconds
    of its run outside its epochs."""

    name: str
    epoch_seconds: list[float]
    scores: list[float]
    overhead: float = 0.0
    start: float = 0.0  # seconds after the sweep's start
    end: float = 0.0


@dataclass
class Replay:
    minutes: float
    epochs: int
    stops: list[int]  # epochs each trial trained, in trial order
    best: float  # best score any trial reached
    best_trial: int
    extrapolated: int = 0
    rungs: list[int] = field(default_factory=list)
    results: list[tuple[int, int, float]] = field(default_factory=list)  # (trial, epoch, score)


def rungs_of(max_t: int, grace: int, rf: float) -> list[int]:
    """Ray Tune's ASHA rungs (`_Bracket`, bracket 0), highest first."""
    count = int(np.log(max_t / grace) / np.log(rf) + 1)
    return [int(grace * rf**k) for k in reversed(range(count))]


def replay(
    trials: list[Trial], *, epochs: int, grace: int, rf: float, slots: int, gap: float
) -> Replay:
    """The trials through ASHA, `slots` at a time, each starting when a slot frees."""
    rungs = rungs_of(asha_max_t(epochs), grace, rf)
    recorded: dict[int, dict[int, float]] = {r: {} for r in rungs}
    slot_free = [0.0] * slots
    running: list[tuple[float, int, int]] = []  # (time its epoch ends, trial, epoch)
    stops = [0] * len(trials)
    extrapolated = 0
    results = []
    end = 0.0
    nxt = 0
    while nxt < len(trials) or running:
        while nxt < len(trials) and slot_free:
            at = slot_free.pop(slot_free.index(min(slot_free)))
            t = trials[nxt]
            heapq.heappush(running, (at + gap + t.overhead + _seconds(t, 1), nxt, 1))
            nxt += 1
        when, i, epoch = heapq.heappop(running)
        t = trials[i]
        score = t.scores[min(epoch, len(t.scores)) - 1]
        results.append((i, epoch, score))
        stop = epoch >= epochs
        for milestone in rungs:  # Ray's rule: the highest rung reached where i is not recorded
            if epoch < milestone or i in recorded[milestone]:
                continue
            earlier = list(recorded[milestone].values())
            if earlier and score < float(np.nanpercentile(earlier, (1 - 1 / rf) * 100)):
                stop = True
            recorded[milestone][i] = score
            break
        if not stop and epoch >= len(t.scores):
            extrapolated += 1  # goes on past what was measured: later scores unknown
        if stop:
            stops[i] = epoch
            slot_free.append(when)
            end = max(end, when)
        else:
            heapq.heappush(running, (when + _seconds(t, epoch + 1), i, epoch + 1))
    reached = [max(t.scores[: stops[i]]) for i, t in enumerate(trials)]
    best_trial = int(np.argmax(reached))
    return Replay(
        minutes=end / 60,
        epochs=sum(stops),
        stops=stops,
        best=reached[best_trial],
        best_trial=best_trial,
        extrapolated=extrapolated,
        rungs=rungs,
        results=results,
    )


def _seconds(t: Trial, epoch: int) -> float:
    if epoch <= len(t.epoch_seconds):
        return t.epoch_seconds[epoch - 1]
    return statistics.fmean(t.epoch_seconds)


def measured_gap(trials: list[Trial], slots: int) -> float:
    """Median seconds from a trial's end to the next trial's start (Tune between trials)."""
    gaps = []
    for t in trials[slots:]:
        before = [u.end for u in trials if u.end <= t.start]
        if before:
            gaps.append(t.start - max(before))
    return statistics.median(gaps) if gaps else 0.0


def load_sweep(uri: str, parent: str | None) -> tuple[dict, list[Trial], float]:
    """(the parent's params, its trials in start order, its wall seconds) from MLflow."""
    from mlflow import MlflowClient

    db = sqlite_file(uri)
    if db is not None and not db.is_file():  # MLflow would create an empty store there
        raise SystemExit(f"no MLflow store at {db}: run `pipeline tune` first, or --tracking-uri")
    client = MlflowClient(uri)
    runs = []
    for exp in client.search_experiments():
        runs += client.search_runs([exp.experiment_id], max_results=5000)
    sweeps = [
        r
        for r in runs
        if "mlflow.parentRunId" not in r.data.tags and "tune.reduction_factor" in r.data.params
    ]
    if parent:
        sweeps = [r for r in sweeps if parent in (r.info.run_id, r.info.run_name)]
    if not sweeps:
        raise SystemExit(f"no sweep ({parent or 'any'}) in {uri}: run `pipeline tune` first")
    sweep = max(sweeps, key=lambda r: r.info.start_time)
    metric = sweep.data.params.get("tune.metric", "val_bleu")
    sign = 1.0 if metric == "val_bleu" else -1.0  # val_loss / val_ppl: lower is better
    t0 = sweep.info.start_time
    trials = []
    kids = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == sweep.info.run_id]
    for r in sorted(kids, key=lambda r: r.info.start_time):
        secs = sorted(client.get_metric_history(r.info.run_id, "epoch_seconds"), key=_step)
        scores = sorted(client.get_metric_history(r.info.run_id, metric), key=_step)
        if not secs or len(secs) != len(scores) or r.info.end_time is None:
            continue  # unfinished or not a trial
        life = (r.info.end_time - r.info.start_time) / 1000
        trials.append(
            Trial(
                name=r.info.run_name,
                epoch_seconds=[m.value for m in secs],
                scores=[sign * m.value for m in scores],
                overhead=max(0.0, life - sum(m.value for m in secs)),
                start=(r.info.start_time - t0) / 1000,
                end=(r.info.end_time - t0) / 1000,
            )
        )
    wall = ((sweep.info.end_time or t0) - t0) / 1000
    return sweep.data.params, trials, wall


def _step(m: object) -> int:
    return int(m.step)  # type: ignore[attr-defined]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--tracking-uri",
        default=tracking_uri(),
        help="the sweep's MLflow store (default: the pipeline's, as `pipeline tune` resolves it)",
    )
    ap.add_argument("--parent", default=None, help="the sweep's run id or name (default: newest)")
    ap.add_argument("--rf", type=float, nargs="+", default=[3, 4, 6, 8, 16])
    ap.add_argument("--grace", type=int, default=None, help="default: the sweep's")
    ap.add_argument("--slots", type=int, default=2, help="trials side by side")
    args = ap.parse_args()
    params, trials, wall = load_sweep(args.tracking_uri, args.parent)
    if not trials:
        raise SystemExit("the sweep has no finished trials")
    epochs = int(params.get("train.epochs", max(len(t.scores) for t in trials)))
    grace = args.grace or int(params.get("tune.grace_period", 1))
    gap = measured_gap(trials, args.slots)
    measured_stops = [len(t.scores) for t in trials]
    measured_best = int(np.argmax([max(t.scores) for t in trials]))
    out: dict = {}
    for rf in [float(params["tune.reduction_factor"]), *args.rf]:
        r = replay(trials, epochs=epochs, grace=grace, rf=rf, slots=args.slots, gap=gap)
        out[f"rf{rf:g}"] = {
            "minutes": round(r.minutes, 2),
            "rungs": r.rungs,
            "epochs": r.epochs,
            "stops": r.stops,
            "same_stops_as_measured": r.stops == measured_stops,
            "best": round(abs(r.best), 2),
            "best_is_measured_best": r.best_trial == measured_best,
            "extrapolated": r.extrapolated,
        }
    print(
        json.dumps(
            {
                "benchmark": "asha_replay",
                "sweep": {
                    "trials": len(trials),
                    "reduction_factor": params["tune.reduction_factor"],
                    "grace_period": grace,
                    "epochs": epochs,
                    "wall_minutes": round(wall / 60, 2),
                    "epochs_trained": sum(measured_stops),
                    "gap_s": round(gap, 1),
                    "overhead_s_median": round(statistics.median(t.overhead for t in trials), 1),
                },
                "replayed": out,
            }
        )
    )


if __name__ == "__main__":
    main()
