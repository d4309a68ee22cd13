"""Benchmark: the clean + tokenize + reverse stages (polars, streaming parquet to parquet) against
a plain-Python implementation of the same steps (re + unicodedata + Counter + loops).

    .venv/bin/python benchmarks/preprocess.py [--pairs 1000000] [--skip-python]

Prints ONE JSON line: pairs, seconds (the three stages, wall, each timed inside its process),
python_seconds, ratio (python_seconds / seconds), peak_rss_mb (the largest peak RSS of the three
stage processes: each stage runs in its own subprocess, as `pipeline <stage>` and `dvc repro`
run them, so the Python baseline never pollutes it), CPU seconds of both and their ratio (CPU
time, all threads, is steadier than wall time on a shared machine), polars threads, per-stage
seconds and peak RSS, and whether the outputs (ids of every split, both vocabularies) are
identical. The Python baseline runs in this process, single-threaded (the GIL), after the
polars stages.

Corpus: `seq2seq.corpora.sample.generate` (at most 100,000 distinct pairs, it is slow), tiled
to `--pairs` rows with the copy number appended to both sides of each copy, plus deterministic
noise so that every cleaning rule has work: decomposed umlauts (NFD), tabs, NBSP, zero-width
spaces, empty targets, exact duplicates and length-ratio outliers. Split 90/5/5 (train, valid,
test) in row order. Default data.* settings of params.yaml.
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import resource
import subprocess
import sys
import tempfile
import time
import unicodedata
from collections import Counter
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.config import Config  # noqa: E402
from seq2seq.corpora.sample import generate  # noqa: E402

SPLITS = ("train", "valid", "test")
STAGES = ("clean", "tokenize", "reverse")
BASE_PAIRS = 100_000


# ---------------------------------------------------------------------------------- the corpus
def _where(cond: pl.Expr, value: pl.Expr, column: str) -> pl.Expr:
    return pl.when(cond).then(value).otherwise(pl.col(column)).alias(column)


def add_noise(pairs: pl.DataFrame) -> pl.DataFrame:
    """Deterministic dirt for every cleaning rule, on a few rows each (by row number i)."""
    i, src, tgt = pl.col("i"), pl.col("src"), pl.col("tgt")
    pairs = pairs.with_columns(
        _where(i % 101 == 0, src.str.normalize("NFD"), "src"),  # decomposed umlauts
        _where(i % 103 == 0, tgt.str.replace_all(" ", " \t "), "tgt"),  # tabs, runs
    )
    pairs = pairs.with_columns(
        _where(i % 107 == 0, src.str.replace(" ", "\u00a0\u200b "), "src"),  # NBSP, ZWSP
        _where(i % 307 == 0, tgt.repeat_by(4).list.join(" "), "tgt"),  # ratio outliers
    )
    pairs = pairs.with_columns(_where(i % 1009 == 0, pl.lit(" "), "tgt"))  # empty targets
    dup = i % 211 == 0  # an exact copy of the row before
    return pairs.with_columns(
        _where(dup, src.shift(1).fill_null(src), "src"),
        _where(dup, tgt.shift(1).fill_null(tgt), "tgt"),
    )


def make_corpus(pairs: int, seed: int, raw: Path) -> None:
    """Write raw/{train,valid,test}.parquet with `pairs` rows in all (not timed)."""
    base = generate(min(pairs, BASE_PAIRS), seed).rename({"de": "src", "en": "tgt"})
    copies = -(-pairs // base.height)
    tiled = pl.concat([base.with_columns(copy=pl.lit(k, pl.UInt32)) for k in range(copies)])
    tiled = tiled.head(pairs).with_row_index("i")
    tag = " " + pl.col("copy").cast(pl.String)
    tiled = tiled.with_columns(
        _where(pl.col("copy") > 0, pl.col(c) + tag, c) for c in ("src", "tgt")
    )
    noisy = add_noise(tiled).select("src", "tgt")
    raw.mkdir(parents=True, exist_ok=True)
    n_held = max(pairs // 20, 1)
    bounds = {"train": (0, pairs - 2 * n_held), "valid": (pairs - 2 * n_held, n_held)}
    bounds["test"] = (pairs - n_held, n_held)
    for split, (start, n) in bounds.items():
        noisy.slice(start, n).write_parquet(raw / f"{split}.parquet")


# ---------------------------------------------------------------------------- the polars path
def config(root: Path) -> Config:
    paths = {f"paths.{k}": str(root / k) for k in ("raw", "clean", "tokens", "prepared")}
    return Config().with_overrides(paths)


def peak_rss_mb() -> float:
    """This process's peak RSS since exec: VmHWM. (ru_maxrss would also count the parent's RSS
    at fork time, which holds the generated corpus.)"""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux


def polars_worker(root: Path, stage: str) -> None:
    """Run in a subprocess: one stage; prints its time and this process's peak RSS."""
    from pipeline.stages import preprocess

    cfg = config(root)
    t0, c0 = time.perf_counter(), time.process_time()
    getattr(preprocess, stage)(cfg)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(json.dumps({
        "seconds": seconds,
        "peak_rss_mb": peak_rss_mb(),
        "cpu_seconds": cpu,
        "threads": pl.thread_pool_size(),
    }))  # fmt: skip


def polars_path(root: Path) -> dict:
    """The three stages, each in its own process as `pipeline <stage>` / `dvc repro` run them."""
    stages = {}
    for stage in STAGES:
        proc = subprocess.run(
            [sys.executable, __file__, "--worker", str(root), "--stage", stage],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        stages[stage] = json.loads(proc.stdout.strip().splitlines()[-1])
    return stages


# ---------------------------------------------------------------------------- the Python path
WHITE_SPACE = set("\t\n\v\f\r \x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000") | {
    chr(c) for c in range(0x2000, 0x200B)
}
SPACES = re.compile(r"\s+")
TOKEN = re.compile(r"\w+|[^\w\s]")


@functools.cache
def invisible() -> re.Pattern:
    """Control (Cc, not whitespace) and format (Cf) characters, like seq2seq.text."""
    chars = (chr(c) for c in range(0x110000))
    drop = (c for c in chars if unicodedata.category(c) in ("Cc", "Cf") and c not in WHITE_SPACE)
    return re.compile("[" + "".join(re.escape(c) for c in drop) + "]")


def python_clean(pairs: list[tuple[str, str]], d, dedup: bool) -> list[list[str]]:
    """Normalise, drop; returns the kept pairs' token lists [src_tokens, tgt_tokens]."""
    kept, seen, max_chars, ctrl = [], set(), d.max_len * 50, invisible()
    for pair in pairs:
        s, t = (
            unicodedata.normalize("NFC", SPACES.sub(" ", ctrl.sub("", x)).strip()) for x in pair
        )
        if not s or not t or len(s) > max_chars or len(t) > max_chars:
            continue
        ts = TOKEN.findall(s.lower() if d.lowercase else s)
        tt = TOKEN.findall(t.lower() if d.lowercase else t)
        ns, nt = len(ts), len(tt)
        if max(ns, nt) > d.max_len or (max(ns, nt) + 1) / (min(ns, nt) + 1) > d.max_ratio:
            continue
        if dedup:
            if (s, t) in seen:
                continue
            seen.add((s, t))
        kept.append([ts, tt])
    return kept


def python_vocab(token_lists, d) -> list[str]:
    counts = Counter()
    for toks in token_lists:
        counts.update(toks)
    ranked = sorted(
        (t for t, c in counts.items() if c >= d.min_freq), key=lambda t: (-counts[t], t)
    )
    return ["<pad>", "<unk>", "<sos>", "<eos>", *ranked[: d.max_size - 4]]


def python_path(root: Path, out: Path, d) -> dict:
    """The same steps in plain Python; writes the prepared ids; returns vocabularies."""
    kept = {}
    for split in SPLITS:
        table = pq.read_table(root / "raw" / f"{split}.parquet")
        pairs = zip(table.column("src").to_pylist(), table.column("tgt").to_pylist(), strict=True)
        kept[split] = python_clean(list(pairs), d, dedup=split == "train")
    itos = [python_vocab((p[k] for p in kept["train"]), d) for k in (0, 1)]
    stoi = [{t: i for i, t in enumerate(v)} for v in itos]
    out.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        src_ids, tgt_ids = [], []
        for ts, tt in kept[split]:
            ids = [stoi[0].get(t, 1) for t in ts]
            src_ids.append(ids[::-1] if d.reverse_source else ids)
            tgt_ids.append([stoi[1].get(t, 1) for t in tt])
        typ = pa.list_(pa.uint32())
        table = pa.table({"src_ids": pa.array(src_ids, typ), "tgt_ids": pa.array(tgt_ids, typ)})
        pq.write_table(table, out / f"{split}.parquet")
    return {"src": itos[0], "tgt": itos[1]}


def identical(root: Path, py_out: Path, py_vocab: dict) -> bool:
    prepared = root / "prepared"
    for side in ("src", "tgt"):
        itos = json.loads((prepared / f"vocab.{side}.json").read_text(encoding="utf-8"))["itos"]
        if itos != py_vocab[side]:
            return False
    for split in SPLITS:
        ours = pl.read_parquet(prepared / f"{split}.parquet", columns=["src_ids", "tgt_ids"])
        if not ours.equals(pl.read_parquet(py_out / f"{split}.parquet")):
            return False
    return True


# ---------------------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--skip-python", action="store_true", help="polars path only (memory runs)")
    ap.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return polars_worker(args.worker, args.stage)
    with tempfile.TemporaryDirectory(prefix="bench-preprocess-") as tmp:
        root = Path(tmp)
        make_corpus(args.pairs, args.seed, root / "raw")
        stages = polars_path(root)
        seconds = sum(s["seconds"] for s in stages.values())
        result = {
            "pairs": args.pairs,
            "seconds": round(seconds, 2),
            "peak_rss_mb": round(max(s["peak_rss_mb"] for s in stages.values()), 1),
            "cpu_seconds": round(sum(s["cpu_seconds"] for s in stages.values()), 2),
            "threads": stages["clean"]["threads"],
            "stage_seconds": {k: round(s["seconds"], 2) for k, s in stages.items()},
            "stage_peak_rss_mb": {k: round(s["peak_rss_mb"], 1) for k, s in stages.items()},
        }
        if not args.skip_python:
            d = config(root).data
            invisible()  # like compiling a regex constant: not timed
            t0, c0 = time.perf_counter(), time.process_time()
            py_vocab = python_path(root, root / "python", d)
            result["python_seconds"] = round(time.perf_counter() - t0, 2)
            result["python_cpu_seconds"] = round(time.process_time() - c0, 2)
            result["ratio"] = round(result["python_seconds"] / seconds, 2)
            result["cpu_ratio"] = round(result["python_cpu_seconds"] / result["cpu_seconds"], 2)
            result["identical"] = identical(root, root / "python", py_vocab)
        meta = json.loads((root / "prepared" / "meta.json").read_text(encoding="utf-8"))
        result["rows"] = meta["rows"]
        result["vocab_size"] = meta["vocab_size"]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
