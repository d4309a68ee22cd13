"""The seeds' reference trainer (`../shared/bench/seed_reference.py`) for a fixed time.

The reference itself times a fixed number of steps (`--steps`). This driver uses its own
functions unchanged (reading, vocabularies, encoding with the source reversed, its random
batches across the whole epoch, the model and its init, Adam, its epoch loop with teacher forcing
0.5 and clipping at 1) and only stops handing it batches once `--seconds` have passed after the
2-batch warm-up, so that all trainers of `benchmarks/train_peers.py` run for the same time. A
different `--seed` per round draws other batches from the epoch. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT.parent / "shared" / "bench" / "seed_reference.py"


def load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("seed_reference", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load the reference trainer {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def for_seconds(batches: Iterable, seconds: float, count: dict) -> Iterator:
    """`batches` until `seconds` have passed since the first was handed out (each is trained
    before the next is asked for, so whole steps are timed)."""
    deadline = None
    for batch in batches:
        now = time.perf_counter()
        if deadline is None:
            deadline = now + seconds
        elif now >= deadline:
            return
        count["steps"] += 1
        yield batch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--reference", type=Path, default=REFERENCE)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--teacher-forcing", type=float, default=0.5)
    a = ap.parse_args()
    ref = load(a.reference)
    torch.set_num_threads(a.threads)
    random.seed(a.seed)
    torch.manual_seed(a.seed)
    tr_s, tr_t = ref.read(a.data / "train.de.gz"), ref.read(a.data / "train.en.gz")
    s_stoi, _ = ref.vocab(tr_s)
    t_stoi, _ = ref.vocab(tr_t)
    src = [ref.encode(s, s_stoi, True) for s in tr_s]
    trg = [ref.encode(t, t_stoi) for t in tr_t]
    model = ref.Seq2Seq(
        ref.Encoder(len(s_stoi), 256, 512, 2, 0.5), ref.Decoder(len(t_stoi), 256, 512, 2, 0.5)
    )
    for p in model.parameters():
        nn.init.uniform_(p.data, -0.08, 0.08)
    opt = torch.optim.Adam(model.parameters())
    crit = nn.CrossEntropyLoss(ignore_index=1)
    tfr = a.teacher_forcing
    ref.run_epoch(model, ref.batches(src, trg, a.batch), opt, crit, True, limit=2, tfr=tfr)
    count = {"steps": 0}
    timed = for_seconds(ref.batches(src, trg, a.batch), a.seconds, count)
    loss, tokens, seconds = ref.run_epoch(model, timed, opt, crit, True, tfr=tfr)
    print(
        json.dumps(
            {
                "trainer": "seed_reference",
                "tok_per_s": tokens / seconds,
                "target_tokens": tokens,
                "steps": count["steps"],
                "seconds": seconds,
                "train_loss": loss,
                "params": sum(p.numel() for p in model.parameters()),
                "teacher_forcing": tfr,
                "threads": torch.get_num_threads(),
            }
        )
    )


if __name__ == "__main__":
    main()
