"""bf16 autocast or fp32 (`seq2seq.precision`): probed kernels, measured speed, clear errors."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
import torch

from seq2seq import precision
from seq2seq.errors import PrecisionError
from seq2seq.model import Seq2Seq
from seq2seq.precision import autocast_enabled, bf16_problem, bf16_speedup, choose_precision

CPU = torch.device("cpu")
BF16_PROBLEM = bf16_problem("cpu")
needs_bf16 = pytest.mark.skipif(
    BF16_PROBLEM is not None, reason=f"no bf16 LSTM kernels on this CPU: {BF16_PROBLEM}"
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _model() -> Seq2Seq:
    torch.manual_seed(0)
    return Seq2Seq(40, 30, emb_dim=16, hidden_dim=32, num_layers=2, dropout=0.2)


def test_off_is_fp32_and_bad_modes_are_refused() -> None:
    assert choose_precision("off", CPU, _model()) == precision.Precision(
        False, None, "train.bf16 is off"
    )
    with pytest.raises(ValueError, match="bf16"):
        autocast_enabled("maybe", CPU)


def test_on_follows_the_kernel_probe() -> None:
    if BF16_PROBLEM is None:
        assert autocast_enabled("on", CPU)
    else:  # the clear error where bf16 is missing (also tested below on every CPU)
        with pytest.raises(PrecisionError, match="train.bf16"):
            autocast_enabled("on", CPU)


@needs_bf16
@pytest.mark.parametrize("speedup, chosen", [(1.48, True), (1.05, False), (0.67, False)])
def test_auto_on_a_cpu_follows_the_measured_speedup(
    monkeypatch: pytest.MonkeyPatch, speedup: float, chosen: bool
) -> None:
    """The same CPU flags gave 1.48x on an AMD EPYC and 0.67x on an Intel Xeon: the measured
    speed decides, with a margin (BF16_MIN_SPEEDUP) against noise."""
    seen = []
    monkeypatch.setattr(precision, "bf16_speedup", lambda m, b: seen.append((m, b)) or speedup)
    model = _model()
    choice = choose_precision("auto", CPU, model, 48)
    assert choice.bf16 is chosen and choice.speedup == speedup
    assert f"{speedup:.2f}x" in choice.reason and seen == [(model, 48)]


def test_auto_without_a_model_to_measure_is_fp32() -> None:
    assert choose_precision("auto", CPU).bf16 is False


@needs_bf16
def test_speedup_probe_measures_without_touching_the_model_or_the_rng() -> None:
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    speedup = bf16_speedup(model, batch_size=8, length=5, rounds=1)
    assert math.isfinite(speedup) and speedup > 0
    assert torch.equal(torch.rand(3), expected)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def test_bf16_probe_leaves_the_global_rng_alone() -> None:
    bf16_problem.cache_clear()
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    bf16_problem("cpu")
    assert torch.equal(torch.rand(3), expected)


PROBE_WITHOUT_BF16 = """
import torch
from seq2seq.errors import PrecisionError
from seq2seq.model import Seq2Seq
from seq2seq.precision import autocast_enabled, bf16_problem, choose_precision
cpu = torch.device("cpu")
problem = bf16_problem("cpu")
assert problem is not None and "primitive descriptor" in problem, problem
model = Seq2Seq(9, 9, emb_dim=8, hidden_dim=8, num_layers=1, dropout=0.0)
auto = choose_precision("auto", cpu, model, 4)
assert auto.bf16 is False and auto.speedup is None and "no bf16 LSTM kernels" in auto.reason
assert autocast_enabled("off", cpu) is False
try:
    autocast_enabled("on", cpu)
except PrecisionError as err:
    print(err)
else:
    raise SystemExit("bf16 'on' did not raise")
"""


def test_without_bf16_kernels_auto_is_fp32_and_on_is_a_clear_error() -> None:
    """oneDNN capped at AVX2 (`ONEDNN_MAX_CPU_ISA`) has no bf16 LSTM kernels, on any x86 CPU:
    the state of every CPU without AVX-512, where torch's CPU flags still may say bf16."""
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"}
    res = subprocess.run([sys.executable, "-c", PROBE_WITHOUT_BF16], env=env,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert res.returncode == 0, res.stderr
    message = res.stdout.strip()
    assert message.startswith("bf16 autocast cannot train the LSTM on this cpu")
    assert "Fix: set train.bf16 to auto" in message and "ONEDNN_VERBOSE" not in message


@pytest.mark.parametrize(("rows", "padded"), [(1, 128), (128, 128), (129, 256), (300, 384)])
def test_padded_cast_rounds_rows_up_to_the_bucket_with_zero_rows(rows: int, padded: int) -> None:
    t = torch.randn(rows, 3, 2)
    out = precision.padded_cast(t, torch.bfloat16)
    assert out.shape == (padded, 3, 2) and out.dtype == torch.bfloat16
    assert torch.equal(out[:rows], t.to(torch.bfloat16))
    assert not out[rows:].any()
