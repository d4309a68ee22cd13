"""The CPU training step with the decoder on packed rows against its padded segments, in one run.

`seq2seq.model.PACKED_DECODER` picks how the training step runs the decoder on the CPU: on
packed rows (every step holds only the unfinished rows; a segment ends only before a
free-running step) or, as before, in padded segments cut where a quarter of the rows have
finished. Two identical models (the seeds' model, Multi30k de->en as in train_throughput.py),
one per arm, train on the same batches, drawn across the whole epoch, in alternating chunks;
the figures are target tokens per second per chunk and the median of the per-chunk ratios.

    python benchmarks/decoder_packing.py                      # teacher forcing 0.5 and 1.0
    python benchmarks/decoder_packing.py --tf 0.5 --threads 1

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from train_throughput import DATA, build, fresh_model  # noqa: E402

import seq2seq.model as model_module  # noqa: E402
from seq2seq.batching import iterate_batches  # noqa: E402
from seq2seq.training import make_generator, train_epoch  # noqa: E402


def _run(arm: tuple, packed: bool, chunk: list, tf: float) -> float:
    """Train one arm's model on `chunk` with the decoder packed or not -> target tok/s."""
    model, opt, gen = arm
    model_module.PACKED_DECODER = packed
    kw = {"teacher_forcing": tf, "clip_norm": 1.0, "generator": gen, "autocast": False}
    return train_epoch(model, opt, iter(chunk), **kw).tokens_per_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tf", type=float, nargs="+", default=[0.5, 1.0], help="teacher forcing")
    ap.add_argument("--chunk", type=int, default=10, help="batches per chunk")
    ap.add_argument("--rounds", type=int, default=8, help="alternating chunks per arm")
    ap.add_argument("--batch", type=int, default=128, help="sentence pairs a batch")
    ap.add_argument("--pool", type=int, default=3, help="batches per length-sorting pool")
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    train, _, v_src, v_tgt = build(args.data, "de", "en")
    kw = {"shuffle": True, "seed": args.seed, "epoch": 1, "pool_batches": args.pool}
    batches = list(iterate_batches(train, args.batch, **kw))
    need = args.chunk * args.rounds + 2
    if len(batches) < need:
        sys.exit(f"decoder_packing: {len(batches)} batches, {need} needed: fewer --rounds/--chunk")
    pick = batches[:: len(batches) // need][:need]  # across the epoch's batch mix
    result: dict = {"threads": args.threads, "chunk": args.chunk, "rounds": args.rounds}
    for tf in args.tf:
        arms = {}
        for packed in (False, True):
            model, opt = fresh_model(v_src, v_tgt, args.seed)
            arms[packed] = (model, opt, make_generator(args.seed))
        for packed in arms:  # warm-up
            _run(arms[packed], packed, pick[:2], tf)
        tok_s: dict[bool, list[float]] = {False: [], True: []}
        for r in range(args.rounds):
            chunk = pick[2 + r * args.chunk : 2 + (r + 1) * args.chunk]
            for packed in (False, True) if r % 2 == 0 else (True, False):
                tok_s[packed].append(_run(arms[packed], packed, chunk, tf))
        ratios = [p / q for p, q in zip(tok_s[True], tok_s[False], strict=True)]
        result[f"tf{tf}"] = {
            "padded_tok_s": [round(x) for x in tok_s[False]],
            "packed_tok_s": [round(x) for x in tok_s[True]],
            "packed_over_padded": round(statistics.median(ratios), 4),
        }
    model_module.PACKED_DECODER = True
    print(json.dumps(result))


if __name__ == "__main__":
    main()
