"""Shared fixtures. Module-specific fixtures live in their own test files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MULTI30K = ROOT.parent / "shared" / "data" / "multi30k"
VENV_BIN = ROOT / ".venv" / "bin"


@pytest.fixture(autouse=True)
def _no_ambient_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests must not pick up a developer's mirror, Ray cluster or MLflow server."""
    for var in ("SEQ2SEQ_DATA_MIRROR", "RAY_ADDRESS", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def multi30k_dir() -> Path:
    if not MULTI30K.is_dir():
        pytest.skip(f"{MULTI30K} (the shared Multi30k mirror) is absent")
    return MULTI30K


def pipeline_cmd() -> list[str]:
    """The installed console script (falls back to `python -m pipeline`)."""
    exe = VENV_BIN / "pipeline"
    return [str(exe)] if exe.exists() else [os.environ.get("PYTHON", "python"), "-m", "pipeline"]
