"""Training throughput side by side: the seeds' reference, this project's step and OpenNMT-py.

Same machine, model, data, batch size and threads: Multi30k de->en prepared as in
`train_throughput.py` (its `build`), the seeds' model (emb 256, hidden 512, 2 + 2 LSTM layers,
dropout 0.5, Adam lr 1e-3, clip 1, 128 pairs a batch, no attention). Each round runs every
trainer for `--seconds` after a `--warmup`-batch warm-up, one after the other (the order rotates
from round to round), and records steady-state target tokens per second (y1..yn and <eos>,
padding excluded) over the timed batches:

- `reference`: the seeds' tutorial trainer (`../shared/bench/seed_reference.py`, teacher forcing
  0.5) through `peers/reference_step.py`, on its own random unbucketed batches (its recipe), a
  different draw each round;
- `ours_tf1`, `ours_tf05`: this project's `train_epoch` at teacher forcing 1.0 and 0.5 (plus
  `_bf16` twins under bf16 autocast where a probe says bf16 kernels run; elsewhere skipped with
  a note), on the project's batches of the round's epoch (`iterate_batches`, pools of `--pool`,
  batch order shuffled: a random draw from the whole epoch's mix, a new epoch each round);
- `opennmt`: OpenNMT-py 3.5.1's own RNN encoder-decoder and trainer (`peers/opennmt_step.py`,
  always teacher-forced), in its venv from `peers/install.sh`, on exactly the batches `ours_*`
  get in that round (written to a file). Not installed: skipped with a note, never a crash.

fairseq is not among them: benchmarks/README.md says why.

    python benchmarks/train_peers.py                       # 3 rounds of 60 s each (~13 min)
    python benchmarks/train_peers.py --seconds 20 --rounds 1 --trainers ours_tf1,opennmt

Prints one JSON line: medians per trainer (`tok_s`), the ratios ours/opennmt (teacher forcing
1.0, as OpenNMT-py trains) and ours/reference (0.5, the reference's), every round's figures,
parameter counts and `notes`.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE), str(HERE / "peers")]

from reference_step import for_seconds  # noqa: E402
from train_throughput import DATA, REFERENCE, build, fresh_model  # noqa: E402

from seq2seq.batching import ParallelCorpus, iterate_batches  # noqa: E402
from seq2seq.precision import bf16_problem  # noqa: E402
from seq2seq.training import make_generator, train_epoch  # noqa: E402
from seq2seq.vocab import EOS, PAD, SOS, UNK  # noqa: E402

INSTALL = "benchmarks/peers/install.sh"
TRAINERS = ("reference", "ours_tf1", "ours_tf05", "opennmt")
OURS = {"ours_tf1": 1.0, "ours_tf05": 0.5}  # teacher forcing
RATIOS = {  # ratio name: (numerator, denominator)
    "ours_tf1/opennmt": ("ours_tf1", "opennmt"),
    "ours_tf05/reference": ("ours_tf05", "reference"),
    "ours_tf1_bf16/opennmt": ("ours_tf1_bf16", "opennmt"),
    "ours_tf05_bf16/reference": ("ours_tf05_bf16", "reference"),
}


def peers_dir() -> Path:
    """Where install.sh puts the peers' venvs: $SEQ2SEQ_PEERS or ~/.cache/seq2seq-peers."""
    return Path(os.environ.get("SEQ2SEQ_PEERS") or Path.home() / ".cache" / "seq2seq-peers")


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def ours(batches: list, v_src: int, v_tgt: int, args, tf: float, bf16: bool) -> dict:
    """A fresh model: `args.warmup` batches untimed, then batches (cycling) for args.seconds."""
    model, opt = fresh_model(v_src, v_tgt, args.seed)
    step = functools.partial(
        train_epoch,
        model,
        opt,
        teacher_forcing=tf,
        clip_norm=1.0,
        generator=make_generator(args.seed),
        autocast=bf16,
    )
    step(batches[: args.warmup])
    count = {"steps": 0}
    stats = step(
        for_seconds(itertools.cycle(batches[args.warmup :] or batches), args.seconds, count)
    )
    return {
        "tok_per_s": stats.tokens_per_s,
        "steps": stats.batches,
        "seconds": stats.seconds,
        "train_loss": stats.loss,
        "params": sum(p.numel() for p in model.parameters()),
    }


def run_json(cmd: list[str], timeout: float) -> tuple[dict | None, str | None]:
    """(the command's last stdout line as JSON, None), or (None, why it failed)."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout:.0f} s"
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        err = proc.stderr.strip().splitlines()
        return None, f"exit {proc.returncode}: {err[-1] if err else 'no output'}"
    try:
        return json.loads(lines[-1]), None
    except json.JSONDecodeError:
        return None, f"not a JSON line: {lines[-1][:200]}"


def reference(args, round_: int) -> tuple[dict | None, str | None]:
    cmd = [
        sys.executable,
        str(HERE / "peers" / "reference_step.py"),
        "--data",
        str(args.data),
        "--reference",
        str(args.reference),
        "--seconds",
        str(args.seconds),
        "--threads",
        str(args.threads),
        "--batch",
        str(args.batch),
        "--seed",
        str(args.seed + round_),
    ]
    return run_json(cmd, args.timeout)


def opennmt_python() -> Path:
    return peers_dir() / "opennmt" / "bin" / "python"


def opennmt(args, batch_file: Path) -> tuple[dict | None, str | None]:
    cmd = [
        str(opennmt_python()),
        str(HERE / "peers" / "opennmt_step.py"),
        "--batches",
        str(batch_file),
        "--seconds",
        str(args.seconds),
        "--warmup",
        str(args.warmup),
        "--threads",
        str(args.threads),
        "--seed",
        str(args.seed),
    ]
    return run_json(cmd, args.timeout)


def write_batches(path: Path, batches: list, v_src: int, v_tgt: int) -> None:
    """The round's batches as plain tensors for a peer that cannot import the project."""
    rows = [[b.src, b.src_lens, b.tgt, b.tgt_lens] for b in batches]
    torch.save(
        {
            "src_vocab": v_src,
            "tgt_vocab": v_tgt,
            "pad": PAD,
            "unk": UNK,
            "bos": SOS,
            "eos": EOS,
            "batches": rows,
        },
        path,
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--reference", type=Path, default=REFERENCE)
    ap.add_argument("--seconds", type=float, default=60.0, help="timed seconds per trainer")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds")
    ap.add_argument("--warmup", type=int, default=2, help="untimed batches before each timing")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--pool", type=int, default=3, help="batches per length-sorting pool")
    ap.add_argument(
        "--trainers",
        default=",".join(TRAINERS),
        help=f"comma-separated subset of {','.join(TRAINERS)}",
    )
    ap.add_argument("--no-bf16", action="store_true", help="no bf16 rounds even where they run")
    ap.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds a subprocess trainer may take (default: 10 min + 3 x seconds)",
    )
    args = ap.parse_args(argv)
    args.trainers = [t for t in args.trainers.split(",") if t]
    unknown = sorted(set(args.trainers) - set(TRAINERS))
    if unknown:
        ap.error(f"unknown trainers {unknown}: choose from {','.join(TRAINERS)}")
    if args.timeout is None:
        args.timeout = 600 + 3 * args.seconds
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    notes: list[str] = ["fairseq 0.12 not included: see benchmarks/README.md"]
    trainers = list(args.trainers)
    if "opennmt" in trainers and not opennmt_python().exists():
        trainers.remove("opennmt")
        notes.append(
            f"opennmt skipped: not installed in {opennmt_python().parents[1]} "
            f"(run {INSTALL}; SEQ2SEQ_PEERS sets the location)"
        )
    bf16_skip = bf16_problem("cpu")
    ours_modes = {name: (tf, False) for name, tf in OURS.items() if name in trainers}
    if args.no_bf16:
        notes.append("bf16 rounds skipped: --no-bf16")
    elif bf16_skip:
        notes.append(f"bf16 rounds skipped: no bf16 LSTM kernels on this CPU ({bf16_skip})")
    else:
        ours_modes.update({f"{n}_bf16": (tf, True) for n, (tf, _) in list(ours_modes.items())})
    order = [t for t in ("reference",) if t in trainers] + list(ours_modes)
    order += [t for t in ("opennmt",) if t in trainers]
    train, _, v_src, v_tgt = build(args.data, "de", "en")
    rows: dict[str, list[float | None]] = {name: [] for name in order}
    params: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="train_peers_") as tmp:
        for r in range(args.rounds):
            batches = list(epoch_batches(train, args, r))
            batch_file = Path(tmp) / f"round{r}.pt"
            if "opennmt" in order:
                write_batches(batch_file, batches, v_src, v_tgt)
            shift = r % max(len(order), 1)
            for name in order[shift:] + order[:shift]:
                res: dict | None
                err: str | None
                if name in ours_modes:
                    tf, bf16 = ours_modes[name]
                    res, err = ours(batches, v_src, v_tgt, args, tf, bf16), None
                elif name == "reference":
                    res, err = reference(args, r)
                else:
                    res, err = opennmt(args, batch_file)
                if err is not None:
                    notes.append(f"{name} failed in round {r + 1}: {err}")
                rows[name].append(None if res is None else res["tok_per_s"])
                if res is not None and "params" in res:
                    params[name.split("_tf")[0]] = res["params"]
            print(
                json.dumps({"round": r + 1, **{k: v[-1] for k, v in rows.items()}}), file=sys.stderr
            )
    print(json.dumps(report(args, rows, params, notes, bf16_skip)))


def epoch_batches(train: ParallelCorpus, args, round_: int):
    """Round `round_`'s batches: the project's epoch `round_ + 1`, batch order shuffled."""
    return iterate_batches(
        train, args.batch, shuffle=True, seed=args.seed, epoch=round_ + 1, pool_batches=args.pool
    )


def report(args, rows: dict, params: dict, notes: list[str], bf16_skip: str | None) -> dict:
    med = {
        k: statistics.median(x for x in v if x is not None)
        for k, v in rows.items()
        if any(x is not None for x in v)
    }
    ratios, per_round = {}, {}
    for name, (num, den) in RATIOS.items():
        if num in med and den in med:
            ratios[name] = med[num] / med[den]
            per_round[name] = [
                a / b if a and b else None for a, b in zip(rows[num], rows[den], strict=True)
            ]
    if len(set(params.values())) > 1:
        notes.append(f"parameter counts differ: {params}")
    return {
        "tok_s": {k: med.get(k) for k in rows},
        "ratios": ratios,
        "ratios_per_round": per_round,
        "rounds": rows,
        "params": params,
        "notes": notes,
        "bf16_skipped": bf16_skip,
        "seconds": args.seconds,
        "warmup": args.warmup,
        "threads": args.threads,
        "batch": args.batch,
        "pool": args.pool,
        "cpu": cpu_name(),
        "torch": torch.__version__,
    }


if __name__ == "__main__":
    main()
