"""GPU readiness in one command: the `gpu` tests, then CPU vs GPU throughput; one JSON line.

Throughput at the seeds' model size (emb 256, hidden 512, 2 layers, dropout 0.5: the model of
`train_throughput.py`), 128 pairs a batch, on the pipeline's built-in sample corpus (generated
here, so no download is needed on the GPU machine), lower-cased words as in `decode.py`:

- training: target tokens per second of timed steps after a warm-up (fp32 on the CPU with all
  its cores, fp32 and bf16 autocast on the GPU); the GPU run is one whole epoch, which also
  trains the model decoded next;
- decoding: sentences per second of batched greedy and beam-5 search over held-out sentences
  (`translate_ids`, `decode.py`'s max length), on both devices, and the share of greedy
  translations the two devices agree on.

Without a CUDA device it prints `{"gpu": false, ...}` and exits 0 (nothing to check); when
`nvidia-smi` sees a GPU that torch cannot use (a CPU-only torch build, a driver mismatch), it
says so and exits 1. With a GPU, the exit code is 1 when a `gpu` test failed.

    bash benchmarks/gpu_check.sh            # about 2 minutes on one GPU
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from decode import RATIO, WORD, vocab_of  # noqa: E402
from train_throughput import fresh_model  # noqa: E402

from seq2seq.batching import ParallelCorpus, iterate_batches  # noqa: E402
from seq2seq.corpora.sample import generate  # noqa: E402
from seq2seq.precision import autocast_enabled  # noqa: E402
from seq2seq.search import translate_ids  # noqa: E402
from seq2seq.training import make_generator, train_epoch  # noqa: E402


def gpu_seen_by_driver() -> str | None:
    """The first GPU `nvidia-smi -L` lists, if any (independent of torch)."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return None
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.splitlines()[0].strip() if out.strip() else None


def run_tests(timeout: float) -> dict[str, Any]:
    """`pytest -m gpu tests/test_gpu.py`: counts from its summary line, and its exit code."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider",
           str(ROOT / "tests" / "test_gpu.py")]  # fmt: skip
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"rc": None, "error": f"timed out after {timeout:.0f} s"}
    tail = proc.stdout.strip().splitlines()[-1:] or [""]
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|error)", tail[0])}
    result: dict[str, Any] = {"rc": proc.returncode, **counts}
    if proc.returncode != 0:
        result["output_tail"] = (proc.stdout + proc.stderr)[-2000:]
    return result


def corpus(pairs: int, held_out: int, seed: int) -> tuple[ParallelCorpus, list, int, int]:
    """Sample-corpus pairs as word ids (source reversed): the training corpus, `held_out`
    source sentences to decode, and both vocabulary sizes."""
    frame = generate(pairs + held_out, seed)
    de = [WORD.findall(s.lower()) for s in frame["de"].to_list()]
    en = [WORD.findall(s.lower()) for s in frame["en"].to_list()]
    sv, tv = vocab_of(de[:pairs]), vocab_of(en[:pairs])
    src = [sv.encode(s)[::-1] for s in de]
    train = ParallelCorpus.from_lists(src[:pairs], [tv.encode(t) for t in en[:pairs]])
    return train, src[pairs:], len(sv), len(tv)


def train_rate(
    data: tuple, device: str, bf16: bool, steps: int | None, batch: int
) -> tuple[float, Any]:
    """(Target tokens/s, the trained model) of the seeds' model on `device`: `steps` timed
    steps after 2 warm-up steps, or (None) the rest of one epoch."""
    train, _, v_src, v_tgt = data
    model, _ = fresh_model(v_src, v_tgt, seed=0)
    model = model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    batches = iter(iterate_batches(train, batch, shuffle=True, seed=0, epoch=1, pool_batches=3))
    kw = dict(teacher_forcing=0.5, clip_norm=1.0, generator=make_generator(0), autocast=bf16)
    train_epoch(model, opt, itertools.islice(batches, 2), **kw)  # warm-up (kernels, allocator)
    timed = batches if steps is None else itertools.islice(batches, steps)
    stats = train_epoch(model, opt, timed, **kw)  # ends with a device sync (the loss)
    return round(stats.tokens_per_s, 1), model


def decode_rate(model: Any, src: list, device: str, beam: int) -> tuple[float, list]:
    """Sentences/s of batched decoding of `src` (after a warm-up on 32 sentences)."""
    kw = dict(beam_size=beam, batch_size=1000, max_len_ratio=RATIO, device=device)
    translate_ids(model, src[:32], **kw)
    start = time.perf_counter()
    out = translate_ids(model, src, **kw)  # ends on the host: the device has finished
    return round(len(src) / (time.perf_counter() - start), 1), out


def throughput(args: argparse.Namespace, gpu: str) -> dict[str, Any]:
    """Training and decoding rates on the CPU and on the `gpu` device (same data and sizes);
    keys say `cpu` and `gpu`."""
    data = corpus(args.pairs, args.sentences, seed=1)
    held_out = data[1]
    bf16 = autocast_enabled("auto", torch.device(gpu))
    train = {"cpu": train_rate(data, "cpu", False, args.cpu_steps, args.batch)[0]}
    train["gpu"], model = train_rate(data, gpu, False, None, args.batch)  # one epoch
    if bf16:
        train["gpu_bf16"] = train_rate(data, gpu, True, args.gpu_steps, args.batch)[0]
    models = {"gpu": (model.eval(), gpu), "cpu": (copy.deepcopy(model).to("cpu"), "cpu")}
    decode: dict[str, dict[str, float]] = {"cpu": {}, "gpu": {}}
    greedy = {}
    for key, (m, device) in models.items():
        for beam in (1, 5):
            decode[key][f"beam{beam}_sent_s"], out = decode_rate(m, held_out, device, beam)
            greedy.setdefault(key, out)
    same = sum(a == b for a, b in zip(greedy["cpu"], greedy["gpu"], strict=True))
    return {
        "train_tok_s": train,
        "train_speedup": round(train["gpu"] / train["cpu"], 2),
        "decode_sent_s": decode,
        "greedy_speedup": round(decode["gpu"]["beam1_sent_s"] / decode["cpu"]["beam1_sent_s"], 2),
        "beam5_speedup": round(decode["gpu"]["beam5_sent_s"] / decode["cpu"]["beam5_sent_s"], 2),
        "greedy_same_on_both": round(same / len(held_out), 4),
        "bf16_autocast": bf16,
        "setup": {
            "pairs": args.pairs,
            "batch": args.batch,
            "cpu_steps": args.cpu_steps,
            "sentences": len(held_out),
            "vocab": list(data[2:]),
            "cpu_threads": torch.get_num_threads(),
            "model": "emb 256, hidden 512, 2 layers, dropout 0.5",
        },
    }


def no_gpu(head: dict[str, Any]) -> int:
    """No usable CUDA device: one JSON line; exit 0 when there is none, 1 when `nvidia-smi`
    sees one that torch cannot use."""
    seen = gpu_seen_by_driver()
    why = "torch.cuda.is_available() is False"
    if os.environ.get("CUDA_VISIBLE_DEVICES") is not None:
        why += f"; CUDA_VISIBLE_DEVICES={os.environ['CUDA_VISIBLE_DEVICES']!r}"
    report = {**head, "gpu": False, "ok": seen is None, "nvidia_smi": seen}
    if seen is None:
        report["skipped"] = f"no CUDA device here ({why}): nothing to check"
    else:
        report["error"] = (
            f"nvidia-smi lists {seen!r} but torch cannot use it ({why}): install a CUDA build "
            "of torch (README: GPUs and clusters)"
        )
    print(json.dumps(report))
    return 0 if seen is None else 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", type=int, default=20000, help="sample-corpus training pairs")
    p.add_argument("--sentences", type=int, default=1000, help="held-out sentences to decode")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--cpu-steps", type=int, default=8, help="timed CPU training steps")
    p.add_argument("--gpu-steps", type=int, default=50, help="timed bf16 GPU training steps")
    p.add_argument("--device", default="cuda", help="the accelerator (tests use 'cpu')")
    p.add_argument("--skip-tests", action="store_true")
    p.add_argument("--test-timeout", type=float, default=150)
    args = p.parse_args()
    start = time.perf_counter()
    head = {"benchmark": "gpu_check", "torch": torch.__version__, "torch_cuda": torch.version.cuda}
    if args.device == "cuda" and not torch.cuda.is_available():
        return no_gpu(head)
    name = torch.cuda.get_device_name() if args.device == "cuda" else args.device
    report = {**head, "gpu": name}
    report["tests"] = (
        {"skipped": "--skip-tests"} if args.skip_tests else run_tests(args.test_timeout)
    )
    report.update(throughput(args, args.device))
    report["ok"] = report["tests"].get("rc") in (0, None) and "error" not in report["tests"]
    report["seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(report))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
