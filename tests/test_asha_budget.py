"""benchmarks/asha_budget.py: the sweep-time model behind the README's 15-minute analysis."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from asha_budget import simulate  # noqa: E402

BASE: dict[str, Any] = dict(
    samples=20, epochs=8, epoch1=27.0, epoch2=56.0, startup=22.0, gap=4.5, reps=300
)


def test_one_trial_trains_every_epoch() -> None:
    """The first trial at a rung always goes on (Ray's ASHA has nothing to compare it with)."""
    mean, p90 = simulate(**{**BASE, "samples": 1, "slots": 1, "epoch2": 27.0}, rf=4)
    assert mean == pytest.approx((22.0 + 4.5 + 8 * 27.0) / 60)
    assert p90 == pytest.approx(mean)


def test_stopping_saves_most_of_training_every_trial_to_the_end() -> None:
    full = (20 * (22.0 + 4.5) + 20 * 8 * (27.0 + 56.0) / 2) / 2 / 60  # half the draws 2-layer
    assert simulate(**BASE, rf=4)[0] < full * 0.5


def test_cheaper_epochs_and_harder_stopping_shorten_the_sweep() -> None:
    base = simulate(**BASE, rf=4)[0]
    assert simulate(**{**BASE, "epoch1": 18.5, "epoch2": 38.0}, rf=4)[0] < base
    assert simulate(**{**BASE, "epochs": 6}, rf=4)[0] < base
    assert simulate(**BASE, rf=16)[0] < base


def test_prints_one_json_line() -> None:
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "asha_budget.py"
    out = subprocess.run(
        [sys.executable, str(script), "--reps", "50", "--rf", "4", "8"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.strip().splitlines()  # fmt: skip
    assert len(out) == 1
    row = json.loads(out[0])
    assert row["benchmark"] == "asha_budget" and set(row["results"]) == {"rf4", "rf8"}
    assert 0 < row["results"]["rf8"]["minutes_mean"] <= row["results"]["rf8"]["minutes_p90"]
