"""bf16 autocast or fp32: decided by what runs, and on a CPU by what runs faster.

`train.bf16: auto` must not guess from CPU flags. Two probes decide:
- `bf16_problem`: does a bf16-autocast training step of the LSTM run at all here? oneDNN has no
  bf16 LSTM kernels without AVX-512 (or under an `ONEDNN_MAX_CPU_ISA` cap below it).
- `bf16_speedup`: where it runs on a CPU, is it faster, at this model's shape? The same flags
  (AVX512-BF16, no AMX) give opposite answers on different CPUs: a 2-core AMD EPYC trained the
  seeds' model 1.48x faster under bf16, a 2-core Intel Xeon (family 6, model 207) 0.67x as fast.
  The probe times forward + backward of a copy of the model in both precisions, alternating.
"""

from __future__ import annotations

import copy
import functools
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from seq2seq.errors import PrecisionError

if TYPE_CHECKING:
    from seq2seq.model import Seq2Seq

BF16_MODES = ("auto", "on", "off")
BF16_MIN_SPEEDUP = 1.1  # 'auto' on a CPU takes bf16 only when its step runs >= 1.1x fp32's


ROW_BUCKET = 128  # padded_cast's row multiple


def padded_cast(t: Tensor, dtype: torch.dtype) -> Tensor:
    """`t` (N, ...) cast to `dtype` in a buffer of N rounded up to a multiple of ROW_BUCKET
    rows, the extra rows zero.

    oneDNN builds (JIT-compiles) a kernel for every new matrix shape it multiplies in bf16:
    about 10 ms each on a 2-core Xeon with AMX, where the product itself takes 2-3 ms. The
    training step's products over all of a batch's tokens would see a new shape at nearly every
    call; padded to the bucket they see a few dozen, whose kernels oneDNN keeps. Zero rows add
    nothing to a product that sums over them and give zero rows where they are kept (callers
    slice them off)."""
    rows = -(-t.shape[0] // ROW_BUCKET) * ROW_BUCKET
    out = t.new_empty((rows, *t.shape[1:]), dtype=dtype)
    out[: t.shape[0]] = t
    out[t.shape[0] :] = 0
    return out


def autocast(device: torch.device, enabled: bool) -> torch.autocast:
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


@functools.cache
def bf16_problem(device: str) -> str | None:
    """None when a bf16-autocast training step of the model really runs on `device` ("cpu",
    "cuda", "cuda:1", ...), else the error it raised.

    A real probe, not a CPU-flag guess: a tiny Seq2Seq (packed encoder, teacher-forced and
    free-running decoder segments, the output layer) runs forward and backward under bf16
    autocast, and a forward without gradients (validation's). oneDNN, which runs the CPU LSTM
    under bf16 without gradients, has no bf16 LSTM kernels without AVX-512 (and an
    `ONEDNN_MAX_CPU_ISA` cap below it hides them even where the CPU has them); it then raises
    "could not create a primitive descriptor". The global RNG is left as it was.
    Cached per device for the life of the process.
    """
    from seq2seq.model import Seq2Seq

    dev = torch.device(device)
    try:
        with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
            torch.manual_seed(0)
            model = Seq2Seq(9, 9, emb_dim=8, hidden_dim=8, num_layers=2, dropout=0.1).to(dev)
            src = torch.tensor([[4, 5, 6, 7], [5, 6, 0, 0]], device=dev)
            tgt = torch.tensor([[2, 4, 5, 6, 3], [2, 7, 3, 0, 0]], device=dev)
            with autocast(dev, True):
                loss, _ = model(src, [4, 2], tgt, [5, 3], [True, False, True, True])
            loss.backward()
            # validation and decoding run nn.LSTM's kernels under autocast (on the CPU, training
            # runs seq2seq.lstm's layer with bf16 products): probe them too
            with torch.no_grad(), autocast(dev, True):
                model.eval()(src, [4, 2], tgt, [5, 3], [True, False, True, True])
    except (RuntimeError, NotImplementedError, TypeError) as e:
        text = str(e).strip()
        first = text.splitlines()[0].split(". ")[0] if text else type(e).__name__
        return first[:300]
    return None


def bf16_speedup(model: Seq2Seq, batch_size: int, length: int = 10, rounds: int = 3) -> float:
    """fp32 step time / bf16-autocast step time of `model` (a Seq2Seq) on its device, measured.

    A copy of the model runs forward + backward on a random batch of `batch_size` pairs of
    `length` tokens, teacher-forced: one untimed step in each precision, then `rounds` timed
    steps of each, alternating; the best time of each counts. The model, its gradients and the
    global RNG are left as they were. About 8 training steps' time."""
    probe = copy.deepcopy(model).train()
    dev = next(probe.parameters()).device
    sizes = int(probe.args["src_vocab_size"]), int(probe.args["tgt_vocab_size"])
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        torch.manual_seed(0)
        src = torch.randint(4, max(sizes[0], 5), (batch_size, length), device=dev)
        tgt = torch.randint(4, max(sizes[1], 5), (batch_size, length + 1), device=dev)
        lens, tf = ([length] * batch_size, [length + 1] * batch_size), [True] * length
        best = {False: float("inf"), True: float("inf")}
        for i in range(2 * (rounds + 1)):
            bf16 = bool(i % 2)
            probe.zero_grad(set_to_none=True)
            start = time.perf_counter()
            with autocast(dev, bf16):
                loss, _ = probe(src, lens[0], tgt, lens[1], tf)
            loss.backward()
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            if i >= 2:
                best[bf16] = min(best[bf16], time.perf_counter() - start)
    return best[False] / best[True]


@dataclass(frozen=True)
class Precision:
    """What `choose_precision` decided, and why (for logs and tracking)."""

    bf16: bool
    speedup: float | None  # measured fp32 / bf16 step time (None: not measured)
    reason: str


def choose_precision(
    mode: str, device: torch.device, model: Seq2Seq | None = None, batch_size: int = 64
) -> Precision:
    """bf16 autocast or fp32 for training `model` in batches of `batch_size` on `device`.

    'off': fp32. 'on': bf16, or a PrecisionError naming the fix where the kernels are missing
    (instead of oneDNN's error at the first batch). 'auto': bf16 where it runs (`bf16_problem`)
    and, on a CUDA device, the device computes bf16 natively; on a CPU, where `model` trains
    at least BF16_MIN_SPEEDUP times faster under it (`bf16_speedup`; no model: fp32).
    """
    if mode not in BF16_MODES:
        raise ValueError(f"bf16 mode must be auto, on or off, got {mode!r}")
    if mode == "off":
        return Precision(False, None, "train.bf16 is off")
    problem = bf16_problem(str(device))
    if problem is not None:
        if mode == "on":
            raise PrecisionError(
                f"bf16 autocast cannot train the LSTM on this {device.type} ({problem})",
                fix="set train.bf16 to auto (bf16 only where it runs) or off",
            )
        return Precision(False, None, f"no bf16 LSTM kernels here ({problem})")
    if mode == "on":
        return Precision(True, None, "train.bf16 is on")
    if device.type == "cuda":
        native = torch.cuda.is_bf16_supported(including_emulation=False)
        return Precision(native, None, f"the GPU {'computes' if native else 'emulates'} bf16")
    if model is None:
        return Precision(False, None, "no model to measure bf16 against fp32 with")
    speedup = bf16_speedup(model, batch_size)
    faster = speedup >= BF16_MIN_SPEEDUP
    verdict = "faster" if faster else f"not {BF16_MIN_SPEEDUP}x faster"
    return Precision(faster, speedup, f"a bf16 step ran {speedup:.2f}x fp32's: {verdict}")


def autocast_enabled(
    mode: str, device: torch.device, model: Seq2Seq | None = None, batch_size: int = 64
) -> bool:
    """Whether to train under bf16 autocast (`choose_precision(...).bf16`)."""
    return choose_precision(mode, device, model, batch_size).bf16
