"""How long a sweep takes under asynchronous ASHA, from measured per-trial costs (a model).

A sweep of `--samples` trials draws 1 or 2 layers with equal chance (the default search space);
each trial costs its start-up plus its epochs, run `--slots` at a time. Asynchronous ASHA (Ray
Tune's `ASHAScheduler`, rungs at grace * rf**k) stops a trial at a rung when its score is below
the (1 - 1/rf) quantile of the scores earlier trials recorded there; the first trial at a rung
always goes on. Scores: a trial's quality (normal) plus a fixed handicap for 2-layer trials,
which trail far behind after their first epoch on the sample corpus (validation BLEU 3 against
13 in the measured sweeps), so that ASHA stops them at the first rung, as it did there.

Costs come from a measured sweep (README, Results: 1-layer epochs 27 s and 2-layer 56 s two at
a time, 22 s per trial of start-up and end, 4.5 s of Tune between trials). The model ignores
how two trials' epochs slow each other beyond those figures. Checked against the measured
20-trial sweep on the defaults: 21.7 simulated minutes against 20.7 measured.

    python benchmarks/asha_budget.py                       # the defaults' costs, several rf
    python benchmarks/asha_budget.py --epochs 6 --epoch1 18.5 --epoch2 38

Prints one JSON line: minutes (mean and 90th percentile over random trial orders) per setting.
"""

from __future__ import annotations

import argparse
import json

import numpy as np


def simulate(
    *,
    samples: int,
    epochs: int,
    epoch1: float,
    epoch2: float,
    startup: float,
    gap: float,
    rf: int,
    grace: int = 1,
    slots: int = 2,
    reps: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """(mean, 90th percentile) wall minutes of the sweep over `reps` random trial draws."""
    rng = np.random.default_rng(seed)
    rungs = [grace * rf**k for k in range(8) if grace * rf**k <= epochs]
    minutes = []
    for _ in range(reps):
        layers = rng.integers(1, 3, samples)
        quality = rng.normal(0.0, 1.0, samples) - 5.0 * (layers == 2)
        recorded: dict[int, list[float]] = {r: [] for r in rungs}
        cost = 0.0
        for i in range(samples):
            trained = epochs
            for rung in rungs:
                score = quality[i] + rng.normal(0.0, 0.3)
                earlier = recorded[rung]
                cutoff = np.percentile(earlier, (1 - 1 / rf) * 100) if earlier else None
                earlier.append(score)
                if cutoff is not None and score < cutoff:
                    trained = rung
                    break
            per_epoch = epoch1 if layers[i] == 1 else epoch2
            cost += startup + gap + trained * per_epoch
        minutes.append(cost / slots / 60)
    return float(np.mean(minutes)), float(np.percentile(minutes, 90))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=int, default=20)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--epoch1", type=float, default=27.0, help="1-layer epoch, seconds")
    ap.add_argument("--epoch2", type=float, default=56.0, help="2-layer epoch, seconds")
    ap.add_argument("--startup", type=float, default=22.0, help="per-trial start-up, seconds")
    ap.add_argument("--gap", type=float, default=4.5, help="Tune's gap between trials, seconds")
    ap.add_argument("--slots", type=int, default=2, help="trials side by side")
    ap.add_argument("--rf", type=int, nargs="+", default=[2, 3, 4, 8, 16])
    ap.add_argument("--reps", type=int, default=2000)
    args = ap.parse_args()
    opts = dict(vars(args))
    out = {}
    for rf in opts.pop("rf"):
        mean, p90 = simulate(**opts, rf=rf)
        out[f"rf{rf}"] = {"minutes_mean": round(mean, 1), "minutes_p90": round(p90, 1)}
    print(json.dumps({"benchmark": "asha_budget", **vars(args), "results": out}))


if __name__ == "__main__":
    main()
