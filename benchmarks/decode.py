"""Decoding speed: batched greedy vs one sentence at a time, and batched beam search.

Multi30k de->en (the shared mirror): lower-cased regex words, vocabularies of words seen twice
in train, source reversed. A model (emb 128, hidden 256, 2 layers; `--emb 256 --hidden 512`: the
seeds' size) is
trained for `--train-epochs` (default 1) with seq2seq.training.fit so that output lengths are
realistic, then
the 1,000 test2016 sentences are translated (max length 2 x source + 10):

- batched greedy (`translate_ids`, length-sorted batches of `--batch-size`),
- the same model one sentence at a time (`greedy_decode` on (1, S) tensors),
- batched beam search (beam 5), and the same with done sentences kept in the batch until it
  is done (`search.COMPACT_BEAMS = False`, fixed shapes: how it ran before 2026-12-06),
- all three again with nn.LSTM's step (`seq2seq.model.INFERENCE_STEP = False`, how every
  decoder step ran before commit f912dfc: oneDNN, which reorders the weights at every call),

each timed after a warm-up on 64 sentences. `ratio` = batched / single sentences per second.
`same_as_single` is the fraction of sentences whose batched greedy ids equal the one-at-a-time
ids (batch-mate independence on real data); `nn_lstm_step` holds the nn.LSTM-step figures,
with the fractions of outputs equal to the inference step's, and `ratio_to_nn_lstm_single` is
batched greedy against nn.LSTM's one sentence at a time. BLEU is sacreBLEU against the raw
references (lowercase=True), only to show the model is a real one.

    python benchmarks/decode.py                       # one epoch of training, then decoding
    python benchmarks/decode.py --train-epochs 5 --threads 2
    python benchmarks/decode.py --emb 256 --hidden 512 --threads 2   # the seeds' model

Threads default to 1: on a shared 2-core machine two torch threads spin against the other
processes. `--batch-size` counts decoder rows (default 1,000: the whole test set in one greedy
batch, whose finished rows leave at every step on the CPU; beam 5 then decodes 200 sentences a
batch).

Last measured figures: benchmarks/README.md.

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import sys
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from seq2seq import model as model_module  # noqa: E402
from seq2seq import search  # noqa: E402
from seq2seq.batching import ParallelCorpus  # noqa: E402
from seq2seq.detok import detokenize  # noqa: E402
from seq2seq.metrics import corpus_bleu  # noqa: E402
from seq2seq.model import Seq2Seq  # noqa: E402
from seq2seq.precision import autocast_enabled  # noqa: E402
from seq2seq.search import greedy_decode, translate_ids  # noqa: E402
from seq2seq.training import fit  # noqa: E402
from seq2seq.vocab import Vocab  # noqa: E402

WORD = re.compile(r"\w+|[^\w\s]")
RATIO = 2.0  # decode up to RATIO x source length + 10 tokens
DATA = ROOT.parent / "shared" / "data" / "multi30k"


def read_lines(path: Path) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def vocab_of(sents: list[list[str]], min_freq: int = 2) -> Vocab:
    counts = Counter(t for s in sents for t in s)
    return Vocab.from_tokens(t for t, n in counts.most_common() if n >= min_freq)


def train(args: argparse.Namespace, corpus: ParallelCorpus, v_src: int, v_tgt: int):
    """`--train-epochs` epochs through the library's epoch loop (`seq2seq.training.fit`)."""
    torch.manual_seed(0)
    model = Seq2Seq(v_src, v_tgt, args.emb, args.hidden, num_layers=2, dropout=0.2)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    spec = SimpleNamespace(epochs=args.train_epochs, batch_size=64, bucket_pool=50,
                           clip_norm=1.0, teacher_forcing=1.0, label_smoothing=0.0, seed=0,
                           optimizer="adam",
                           lr=2e-3, lr_halving_start=None)  # fmt: skip
    autocast = autocast_enabled("auto", torch.device("cpu"), model, spec.batch_size)
    reports = fit(model, optimizer, corpus, None, spec, autocast=autocast)
    seconds = sum(r.train.seconds for r in reports)
    batches = sum(r.train.batches for r in reports)
    return model.eval(), {"seconds": seconds, "batches": batches, "loss": reports[-1].train.loss}


def rate(fn, n: int) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return n / (time.perf_counter() - t0), out


def one_at_a_time(model: Seq2Seq, src: list[list[int]], ratio: float) -> list[list[int]]:
    out = []
    for s in src:
        x = torch.tensor([s], dtype=torch.long)
        out += greedy_decode(model, x, torch.tensor([len(s)]), int(len(s) * ratio + 10))
    return out


def load(data: Path):
    """Tokenised Multi30k train/test (de, en): vocabularies, train corpus, test ids, refs and
    the refs' token counts."""
    tok = {}
    for split in ("train", "test_2016_flickr"):
        for lang in ("de", "en"):
            tok[split, lang] = [
                WORD.findall(x.lower()) for x in read_lines(data / f"{split}.{lang}.gz")
            ]
    sv, tv = vocab_of(tok["train", "de"]), vocab_of(tok["train", "en"])
    train_corpus = ParallelCorpus.from_lists(
        [sv.encode(s)[::-1] for s in tok["train", "de"]], [tv.encode(t) for t in tok["train", "en"]]
    )
    src = [sv.encode(s)[::-1] for s in tok["test_2016_flickr", "de"]]
    refs = read_lines(data / "test_2016_flickr.en.gz")
    ref_tokens = [len(t) for t in tok["test_2016_flickr", "en"]]  # per sentence
    return sv, tv, train_corpus, src, refs, ref_tokens


def measure(model: Seq2Seq, src: list[list[int]], batch_size: int) -> dict:
    """Sentences per second of batched greedy, one-at-a-time greedy and batched beam 5."""

    def batched(beam: int, data=src):
        return translate_ids(
            model, data, beam_size=beam, batch_size=batch_size, max_len_ratio=RATIO
        )

    batched(1, src[:64]), batched(5, src[:64]), one_at_a_time(model, src[:64], RATIO)  # warm-up
    batched_rate, greedy = rate(lambda: batched(1), len(src))
    single_rate, single = rate(lambda: one_at_a_time(model, src, RATIO), len(src))
    beam_rate, beam = rate(lambda: batched(5), len(src))
    search.COMPACT_BEAMS = False  # as before: done sentences stay until their batch is done
    try:
        batched(5, src[:64])
        fixed_rate, fixed = rate(lambda: batched(5), len(src))
    finally:
        search.COMPACT_BEAMS = True
    model_module.INFERENCE_STEP = False  # as before commit f912dfc: nn.LSTM's step (oneDNN)
    try:
        batched(1, src[:64]), batched(5, src[:64]), one_at_a_time(model, src[:64], RATIO)
        nn_batched_rate, nn_greedy = rate(lambda: batched(1), len(src))
        nn_single_rate, _ = rate(lambda: one_at_a_time(model, src, RATIO), len(src))
        nn_beam_rate, nn_beam = rate(lambda: batched(5), len(src))
    finally:
        model_module.INFERENCE_STEP = True
    return {
        "batched_sent_s": round(batched_rate, 1),
        "single_sent_s": round(single_rate, 1),
        "ratio": round(batched_rate / single_rate, 2),
        "beam5_sent_s": round(beam_rate, 1),
        "beam5_fixed_sent_s": round(fixed_rate, 1),
        "beam5_compact_speedup": round(beam_rate / fixed_rate, 2),
        "beam5_same_as_fixed": sum(a == b for a, b in zip(beam, fixed, strict=True)) / len(src),
        "same_as_single": sum(a == b for a, b in zip(greedy, single, strict=True)) / len(src),
        "nn_lstm_step": {
            "batched_sent_s": round(nn_batched_rate, 1),
            "single_sent_s": round(nn_single_rate, 1),
            "ratio": round(nn_batched_rate / nn_single_rate, 2),
            "beam5_sent_s": round(nn_beam_rate, 1),
            "same_greedy": sum(a == b for a, b in zip(greedy, nn_greedy, strict=True)) / len(src),
            "same_beam5": sum(a == b for a, b in zip(beam, nn_beam, strict=True)) / len(src),
        },
        "ratio_to_nn_lstm_single": round(batched_rate / nn_single_rate, 2),
        "greedy": greedy,
        "beam": beam,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train-epochs", type=int, default=1, help="epochs of Multi30k training")
    p.add_argument("--batch-size", type=int, default=1000, help="decoder rows per batch")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: see the docstring)")
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--emb", type=int, default=128, help="embedding size (the seeds' model: 256)")
    p.add_argument("--hidden", type=int, default=256, help="LSTM size (the seeds' model: 512)")
    p.add_argument("--sentences", type=int, default=None, help="decode only the first N")
    args = p.parse_args()
    if args.sentences is not None and args.sentences < 1:
        p.error(f"--sentences must be at least 1, got {args.sentences}")
    torch.set_num_threads(args.threads)
    sv, tv, train_corpus, src, refs, ref_tokens = load(args.data)
    if args.sentences is not None:
        src, refs, ref_tokens = (x[: args.sentences] for x in (src, refs, ref_tokens))
    model, stats = train(args, train_corpus, len(sv), len(tv))
    m = measure(model, src, args.batch_size)
    greedy, beam = m.pop("greedy"), m.pop("beam")

    def bleu(ids: list[list[int]]) -> float:
        hyps = [detokenize(tv.decode(h)) for h in ids]
        return round(corpus_bleu(hyps, refs, lowercase=True).score, 2)

    result = {
        "benchmark": "decode",
        "sentences": len(src),
        "threads": args.threads,
        "batch_size": args.batch_size,
        "train_epochs": args.train_epochs,
        "model": {"emb": args.emb, "hidden": args.hidden, "layers": 2},
        "train_seconds": round(stats["seconds"], 1),
        "train_batches": stats["batches"],
        "train_loss": round(stats["loss"], 3),
        **m,
        "mean_hyp_tokens": round(sum(len(h) for h in greedy) / len(src), 2),
        "mean_ref_tokens": round(sum(ref_tokens) / len(src), 2),
        "bleu_greedy": bleu(greedy),
        "bleu_beam5": bleu(beam),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
