"""benchmarks/train_peers.py in its smallest mode: one JSON line, peers that are not installed and
CPUs without bf16 kernels are notes, not crashes (issue 12). No figure is checked: a second of
training on a toy corpus measures nothing."""

from __future__ import annotations

import gzip
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "train_peers.py"
PEERS = Path(os.environ.get("SEQ2SEQ_PEERS") or Path.home() / ".cache" / "seq2seq-peers")
KEYS = {
    "tok_s",
    "ratios",
    "ratios_per_round",
    "rounds",
    "params",
    "notes",
    "bf16_skipped",
    "seconds",
    "warmup",
    "threads",
    "batch",
    "pool",
    "cpu",
    "torch",
}


def toy_corpus(folder: Path, pairs: int = 160, seed: int = 0) -> Path:
    """train/val .de.gz/.en.gz like the shared Multi30k mirror, word for word, 16 words a side."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", pairs), ("val", pairs // 8)):
        rows = [[rng.randrange(16) for _ in range(rng.randint(2, 7))] for _ in range(n)]
        for lang, prefix in (("de", "w"), ("en", "v")):
            text = "".join(" ".join(f"{prefix}{i}" for i in row) + " .\n" for row in rows)
            with gzip.open(folder / f"{split}.{lang}.gz", "wt", encoding="utf-8") as f:
                f.write(text)
    return folder


def run_peers(tmp_path: Path, peers: Path, *args: str) -> dict:
    env = {**os.environ, "SEQ2SEQ_PEERS": str(peers), "ONEDNN_MAX_CPU_ISA": "AVX2"}
    cmd = [
        sys.executable,
        str(SCRIPT),
        "--data",
        str(toy_corpus(tmp_path / "data")),
        "--seconds",
        "0.3",
        "--rounds",
        "1",
        "--warmup",
        "1",
        "--batch",
        "16",
        *args,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout
    return json.loads(lines[0])


def test_missing_peer_and_no_bf16_are_notes(tmp_path: Path) -> None:
    """No OpenNMT-py venv where SEQ2SEQ_PEERS points and oneDNN capped below bf16: the other
    trainers are measured, and the JSON line says what was skipped and how to install it."""
    empty = tmp_path / "no-peers"
    empty.mkdir()
    out = run_peers(tmp_path, empty)
    assert set(out) >= KEYS
    assert set(out["tok_s"]) == {"reference", "ours_tf1", "ours_tf05"}
    assert all(v > 0 for v in out["tok_s"].values())
    assert all(len(v) == 1 for v in out["rounds"].values())
    assert set(out["ratios"]) == {"ours_tf05/reference"}
    assert out["params"]["reference"] == out["params"]["ours"]  # the same model
    notes = " ".join(out["notes"])
    assert "opennmt skipped" in notes and "benchmarks/peers/install.sh" in notes
    assert str(empty) in notes
    assert out["bf16_skipped"] and "bf16 rounds skipped" in notes


@pytest.mark.slow
@pytest.mark.skipif(
    not (PEERS / "opennmt" / "bin" / "python").exists(),
    reason="OpenNMT-py peer not installed (bash benchmarks/peers/install.sh)",
)
def test_opennmt_peer_trains_the_same_model(tmp_path: Path) -> None:
    """Where the peer is installed: OpenNMT-py trains the round's batches, with the project's
    parameter count, and the ratio ours/opennmt is reported."""
    out = run_peers(tmp_path, PEERS, "--trainers", "ours_tf1,opennmt")
    assert set(out["tok_s"]) == {"ours_tf1", "opennmt"}
    assert out["tok_s"]["opennmt"] > 0
    assert out["params"]["opennmt"] == out["params"]["ours"]
    assert set(out["ratios"]) == {"ours_tf1/opennmt"}
    assert not any("failed" in n for n in out["notes"]), out["notes"]


def test_decoder_packing_compares_both_decoder_paths(tmp_path: Path) -> None:
    """benchmarks/decoder_packing.py: one JSON line, both arms trained on every chunk."""
    script = ROOT / "benchmarks" / "decoder_packing.py"
    data = toy_corpus(tmp_path / "data")
    cmd = [sys.executable, str(script), "--data", str(data), "--batch", "16", "--chunk", "1"]
    cmd += ["--rounds", "2", "--threads", "1", "--tf", "0.5"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout
    result = json.loads(lines[0])["tf0.5"]
    assert len(result["padded_tok_s"]) == len(result["packed_tok_s"]) == 2
    assert min(result["padded_tok_s"] + result["packed_tok_s"]) > 0
    assert result["packed_over_padded"] > 0
