"""OpenNMT-py's own RNN encoder-decoder, trained for a fixed time on given batches: a peer.

Runs inside the peer venv that `benchmarks/peers/install.sh` makes (OpenNMT-py 3.5.1 beside the
project's torch); it never imports the project. `benchmarks/train_peers.py` writes the batches
(the project's own, as token-id tensors) and runs this script in a subprocess.

The model comes from OpenNMT-py's option parser and model builder, set to the seeds' model:
`-encoder_type rnn -decoder_type rnn -rnn_type LSTM`, embeddings 256, hidden 512, 2 + 2 layers,
dropout 0.5 (embeddings, between layers, decoder output), `-global_attention none`,
`-input_feed 0` (input feeding would make the decoder step by step and widen its input: the
plain `StdRNNDecoder` runs `nn.LSTM` over the whole target), no bridge, separate embeddings and
output layer: the project's parameter count (13,909,770 at vocabularies 7,882 / 5,898). Training
is OpenNMT-py's `Trainer` with its `LossCompute` (cross-entropy summed over tokens, normalised by
tokens), its `Optimizer` (Adam, lr 1e-3, gradient norm clipped at 1) and uniform init +-0.08;
OpenNMT-py always teacher-forces.

Input (`--batches`, torch.save'd): {"src_vocab": int, "tgt_vocab": int, "pad": 0, "unk": 1,
"bos": 2, "eos": 3, "batches": [[src (B, S), src_lens (B,), tgt (B, T), tgt_lens (B,)], ...]},
long tensors, batch-first, target `<bos> y1..yn <eos>`, PAD-padded. The first `--warmup`
batches are trained untimed, then the following ones (cycling) until `--seconds` have passed.
Prints one JSON line: target tokens per second (y1..yn and <eos>, padding excluded) over the
timed batches, and the parameter count.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import sys
import time
import warnings

import torch


class _Vocab:
    """What OpenNMT-py's model builder and loss ask of a vocabulary: its size and the ids of the
    special tokens (the batches come already as ids)."""

    def __init__(self, size: int, ids: dict[str, int]) -> None:
        self.size, self.ids = size, ids

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, token: str) -> int:
        return self.ids[token]

    def lookup_token(self, token: str) -> int:
        return self.ids[token]


def onmt_options(args: argparse.Namespace) -> argparse.Namespace:
    from onmt.opts import train_opts
    from onmt.utils.parse import ArgumentParser

    parser = ArgumentParser()
    train_opts(parser)
    argv = [
        "-data", "{}", "-src_vocab", "-", "-tgt_vocab", "-",  # required, unused: no files
        "-model_type", "text",
        "-encoder_type", "rnn", "-decoder_type", "rnn", "-rnn_type", "LSTM",
        "-enc_layers", str(args.layers), "-dec_layers", str(args.layers),
        "-word_vec_size", str(args.emb), "-hidden_size", str(args.hidden),
        "-dropout", str(args.dropout), "-global_attention", "none", "-input_feed", "0",
        "-optim", "adam", "-learning_rate", str(args.lr), "-adam_beta1", "0.9",
        "-adam_beta2", "0.999", "-max_grad_norm", str(args.clip), "-decay_method", "none",
        "-param_init", "0.08", "-normalization", "tokens", "-accum_count", "1",
        "-label_smoothing", "0", "-seed", str(args.seed), "-model_dtype", "fp32",
        "-report_every", "1000000000", "-valid_steps", "1000000000",
    ]  # fmt: skip
    opt = parser.parse_args(argv)
    opt.data = {}  # no corpora: the batches come from the file
    ArgumentParser.update_model_opts(opt)
    ArgumentParser.validate_model_opts(opt)
    ArgumentParser.validate_train_opts(opt)
    return opt


def as_onmt(batch: list[torch.Tensor]) -> tuple[dict, int, int]:
    """(OpenNMT-py's batch dict, its target tokens, its sentence count)."""
    src, src_lens, tgt, tgt_lens = batch
    onmt_batch = {"src": src.unsqueeze(-1), "srclen": src_lens, "tgt": tgt.unsqueeze(-1)}
    return onmt_batch, int((tgt_lens - 1).sum()), len(src)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batches", required=True, help="torch.save'd batches (see the docstring)")
    ap.add_argument("--seconds", type=float, default=60.0, help="timed seconds after warm-up")
    ap.add_argument("--warmup", type=int, default=2, help="untimed batches first")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--emb", type=int, default=256)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--dropout", type=float, default=0.5)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--clip", type=float, default=1.0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")  # OpenNMT-py's deprecation warnings on torch 2.x
    logging.disable(logging.INFO)

    import onmt
    from onmt.constants import DefaultTokens
    from onmt.model_builder import build_model
    from onmt.trainer import build_trainer
    from onmt.utils.misc import set_random_seed
    from onmt.utils.optimizers import Optimizer

    data = torch.load(args.batches, weights_only=True)
    ids = {
        DefaultTokens.PAD: data["pad"],
        DefaultTokens.UNK: data["unk"],
        DefaultTokens.BOS: data["bos"],
        DefaultTokens.EOS: data["eos"],
    }
    vocabs = {"src": _Vocab(data["src_vocab"], ids), "tgt": _Vocab(data["tgt_vocab"], ids)}
    opt = onmt_options(args)
    set_random_seed(opt.seed, False)
    model = build_model(opt, opt, vocabs, None, -1)  # device_id -1: the CPU
    params = sum(p.numel() for p in model.parameters())
    optim = Optimizer.from_opt(model, opt)
    trainer = build_trainer(opt, -1, model, vocabs, optim)

    batches = data["batches"]
    warm = [as_onmt(b)[0] for b in batches[: args.warmup]]
    trainer.train(((b, 0) for b in warm), 0)  # train_steps 0: until the iterator ends

    count = {"tokens": 0, "sents": 0, "steps": 0}

    def timed(deadline: float):
        """The following batches (cycling), as long as time is left: each is trained before the
        next is asked for, so the clock below covers whole steps."""
        for b in itertools.cycle(batches[args.warmup :] or batches):
            if time.perf_counter() >= deadline:
                return
            onmt_batch, tokens, sents = as_onmt(b)
            count["tokens"] += tokens
            count["sents"] += sents
            count["steps"] += 1
            yield onmt_batch, 0

    start = time.perf_counter()
    stats = trainer.train(timed(start + args.seconds), 0)
    seconds = time.perf_counter() - start
    report = {
        "trainer": "opennmt-py",
        "tok_per_s": count["tokens"] / seconds,
        "target_tokens": count["tokens"],
        "sentences": count["sents"],
        "steps": count["steps"],
        "seconds": seconds,
        "train_loss": stats.xent() if stats.n_words else None,
        "params": params,
        "threads": torch.get_num_threads(),
        "onmt": onmt.__version__,
        "torch": torch.__version__,
    }
    print(json.dumps(report))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
