"""GPU readiness. Marked `gpu`, skipped without CUDA: a training step on CUDA equals the CPU's,
batched greedy and beam decoding on CUDA give the CPU's translations, and bf16 autocast trains
on CUDA (finite, falling loss). `benchmarks/gpu_check.sh` runs these plus a CPU vs GPU
throughput comparison (one JSON line); its paths without a GPU are tested here on any machine.
This project's development machines have no GPU: see benchmarks/README.md for where these ran."""

from __future__ import annotations

import copy
import itertools
import json
import math
import os
import random
import shutil
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from conftest import ROOT

from seq2seq.batching import ParallelCorpus, iterate_batches
from seq2seq.model import Seq2Seq
from seq2seq.precision import autocast_enabled, bf16_problem
from seq2seq.search import translate_ids
from seq2seq.training import fit, make_generator, train_epoch

NO_CUDA = "no CUDA device (torch.cuda.is_available() is False)"
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)
VOCAB = 16  # ids 4..15 are words (0-3: PAD, UNK, SOS, EOS)


@pytest.fixture
def _exact_fp32():
    """fp32 on both devices: no TF32 matmuls/convolutions in cuBLAS/cuDNN for these tests."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def task(n: int, seed: int = 0) -> tuple[list[list[int]], list[list[int]]]:
    """A learnable word-for-word task: target = source words shifted by one id; the source is
    stored reversed, as the pipeline stores it."""
    rng = random.Random(seed)
    src = [[rng.randrange(4, VOCAB) for _ in range(rng.randint(2, 7))] for _ in range(n)]
    tgt = [[4 + (w - 3) % (VOCAB - 4) for w in s] for s in src]
    return [s[::-1] for s in src], tgt


def spec(epochs: int) -> SimpleNamespace:
    return SimpleNamespace(epochs=epochs, batch_size=32, bucket_pool=4, clip_norm=1.0,
                           teacher_forcing=0.75, label_smoothing=0.0, seed=3, optimizer="adam",
                           lr=1e-2, lr_halving_start=None)  # fmt: skip


def model(dropout: float = 0.0) -> Seq2Seq:
    torch.manual_seed(0)
    return Seq2Seq(VOCAB, VOCAB, emb_dim=32, hidden_dim=64, num_layers=2, dropout=dropout)


@pytest.mark.gpu
@cuda
@pytest.mark.usefixtures("_exact_fp32")
def test_a_training_step_on_cuda_equals_the_cpu_step() -> None:
    corpus = ParallelCorpus.from_lists(*task(96))
    batches = list(iterate_batches(corpus, 32, shuffle=True, seed=0, epoch=1))
    on = {"cpu": model(), "cuda": model().cuda()}
    stats = {}
    for device, m in on.items():
        opt = torch.optim.Adam(m.parameters(), lr=1e-3)
        stats[device] = train_epoch(m, opt, batches, teacher_forcing=0.5, clip_norm=1.0,
                                    generator=make_generator(7), autocast=False)  # fmt: skip
    assert stats["cuda"].tokens == stats["cpu"].tokens > 0
    assert math.isclose(stats["cuda"].loss, stats["cpu"].loss, rel_tol=1e-4)
    assert stats["cpu"].batches == 3
    for (name, p_cpu), p_gpu in zip(on["cpu"].named_parameters(), on["cuda"].parameters(),
                                    strict=True):  # fmt: skip
        assert p_gpu.device.type == "cuda"
        torch.testing.assert_close(p_gpu.cpu(), p_cpu, rtol=1e-3, atol=1e-5, msg=name)


@pytest.mark.gpu
@cuda
@pytest.mark.usefixtures("_exact_fp32")
def test_batched_greedy_and_beam_decoding_on_cuda_match_the_cpu() -> None:
    m = model().cuda()
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    fit(m, opt, ParallelCorpus.from_lists(*task(2048)), None, spec(10), device="cuda")
    src, tgt = task(200, seed=1)
    cpu = copy.deepcopy(m).cpu().eval()
    m.eval()
    for beam in (1, 4):
        kw = dict(beam_size=beam, batch_size=64, max_len_ratio=2.0)
        on_gpu = translate_ids(m, src, device="cuda", **kw)
        on_cpu = translate_ids(cpu, src, device="cpu", **kw)
        same = sum(a == b for a, b in zip(on_gpu, on_cpu, strict=True)) / len(src)
        assert same >= 0.98, (beam, same)  # float rounding may flip a near-tie, nothing more
        learned = sum(h == t for h, t in zip(on_gpu, tgt, strict=True)) / len(src)
        assert learned >= 0.5, (beam, learned)  # a real model (0.8 on a CPU), not noise


@pytest.mark.gpu
@cuda
@pytest.mark.usefixtures("_exact_fp32")
def test_bf16_autocast_trains_on_cuda() -> None:
    if not torch.cuda.is_bf16_supported(including_emulation=False):
        pytest.skip(f"{torch.cuda.get_device_name()} computes no bf16")
    cuda = torch.device("cuda")
    assert bf16_problem("cuda") is None
    assert autocast_enabled("auto", cuda)  # the pipeline's default turns it on here
    m = model(dropout=0.1).cuda()
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    train, valid = (ParallelCorpus.from_lists(*task(n, seed)) for n, seed in ((2048, 0), (64, 5)))
    reports = fit(m, opt, train, valid, spec(4), device=cuda, autocast=True)
    losses = [r.train.loss for r in reports]
    assert all(math.isfinite(x) for x in losses), losses
    assert all(later < earlier for earlier, later in itertools.pairwise(losses)), losses
    assert losses[-1] < 0.8 * losses[0], losses
    assert reports[-1].valid is not None and math.isfinite(reports[-1].valid.loss)
    assert all(p.dtype == torch.float32 for p in m.parameters())  # autocast, not a cast


# ------------------------------------------------- benchmarks/gpu_check: runs on any machine
def _json_line(proc: subprocess.CompletedProcess) -> dict:
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout + proc.stderr[-3000:]
    return json.loads(lines[0])


def test_gpu_check_without_cuda_says_so_in_one_json_line() -> None:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # no CUDA device for torch, GPU or not
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh")], env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    report = _json_line(proc)
    assert report["benchmark"] == "gpu_check" and report["gpu"] is False
    assert report["torch"] == torch.__version__
    if shutil.which("nvidia-smi") is None:  # nothing to check: exit 0, and why
        assert proc.returncode == 0 and report["ok"] is True, report
        assert "torch.cuda.is_available() is False" in report["skipped"]
    else:  # a GPU torch cannot use (hidden here): an error, exit 1
        assert proc.returncode == 1 and report["ok"] is False, report
        assert "nvidia-smi lists" in report["error"] and "CUDA_VISIBLE_DEVICES" in report["error"]


@pytest.mark.slow
def test_gpu_check_measures_with_the_cpu_standing_in_for_the_gpu() -> None:
    """The throughput code path end to end, tiny, with `--device cpu` in the GPU's place."""
    args = ["--device", "cpu", "--skip-tests", "--pairs", "256", "--sentences", "24",
            "--batch", "32", "--cpu-steps", "2", "--gpu-steps", "2"]  # fmt: skip
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), *args],
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    report = _json_line(proc)
    assert proc.returncode == 0 and report["ok"] is True, report
    assert report["gpu"] == "cpu" and report["tests"] == {"skipped": "--skip-tests"}
    assert report["train_tok_s"]["cpu"] > 0 and report["train_tok_s"]["gpu"] > 0
    for device in ("cpu", "gpu"):
        rates = report["decode_sent_s"][device]
        assert rates["beam1_sent_s"] > 0 and rates["beam5_sent_s"] > 0, rates
    assert report["greedy_same_on_both"] == 1.0  # the same model on the same device
    assert report["train_speedup"] > 0 and report["setup"]["sentences"] == 24
