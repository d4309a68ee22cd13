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


def test_decode_compares_batched_single_and_nn_lstm_steps(tmp_path: Path) -> None:
    """benchmarks/decode.py: one JSON line with batched, one-at-a-time and beam figures for the
    inference step and for nn.LSTM's step, whose outputs agree."""
    data = toy_corpus(tmp_path / "data")
    for lang in ("de", "en"):
        (data / f"test_2016_flickr.{lang}.gz").write_bytes((data / f"val.{lang}.gz").read_bytes())
    cmd = [sys.executable, str(ROOT / "benchmarks" / "decode.py"), "--data", str(data)]
    cmd += ["--emb", "8", "--hidden", "8", "--sentences", "12"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout
    result = json.loads(lines[0])
    assert result["sentences"] == 12
    nn_step = result["nn_lstm_step"]
    for figures in (result, nn_step):
        assert min(figures["batched_sent_s"], figures["single_sent_s"], figures["beam5_sent_s"]) > 0
    assert result["same_as_single"] >= 0.9 and result["beam5_same_as_fixed"] >= 0.9
    assert nn_step["same_greedy"] >= 0.9 and nn_step["same_beam5"] >= 0.9
    ratio = result["batched_sent_s"] / nn_step["single_sent_s"]
    assert result["ratio_to_nn_lstm_single"] == pytest.approx(ratio, rel=0.01)
    bad = subprocess.run([*cmd[:-1], "0"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--sentences must be at least 1" in bad.stderr
    assert "Traceback" not in bad.stderr


def _replay_module():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import asha_replay
    finally:
        sys.path.pop(0)
    return asha_replay


@pytest.mark.parametrize("rf", [2, 3, 4, 8])
def test_asha_replay_stops_trials_as_ray_tunes_asha_would(rf: int) -> None:
    """benchmarks/asha_replay.py: the replayed results, fed in the same order to Ray Tune's own
    ASHA bracket (as the pipeline configures it), get the same stop/continue decisions."""
    from ray.tune.schedulers.async_hyperband import _Bracket

    replay = _replay_module()
    rng = random.Random(rf)
    epochs = 8
    trials = [
        replay.Trial(
            name=str(i),
            epoch_seconds=[rng.uniform(10, 50)] * epochs,
            scores=sorted(rng.uniform(0, 60) for _ in range(epochs)),
            overhead=rng.uniform(5, 15),
        )
        for i in range(20)
    ]
    r = replay.replay(trials, epochs=epochs, grace=1, rf=rf, slots=2, gap=3.0)
    from pipeline.stages.tune import asha_max_t

    bracket = _Bracket(min_t=1, max_t=asha_max_t(epochs), reduction_factor=rf, s=0)
    assert [m for m, _ in bracket._rungs] == r.rungs
    stops = [0] * len(trials)
    for i, epoch, score in r.results:
        trial = type("T", (), {"trial_id": str(i)})()
        if bracket.on_result(trial, epoch, score) == "STOP" or epoch == epochs:
            stops[i] = epoch
    assert stops == r.stops
    assert 1 in stops and epochs in stops  # some stopped early, some trained to the end
    assert r.epochs == sum(stops) and r.extrapolated == 0


def test_asha_replay_reads_a_sweep_from_mlflow(tmp_path: Path) -> None:
    """The script on a sweep written to MLflow as `pipeline tune` writes one: its own setting
    replays to the measured stops, a stricter one stops more."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("sweep")
    t0 = 1_700_000_000_000
    params = {"tune.reduction_factor": "4", "tune.grace_period": "1", "train.epochs": "4"}
    parent = client.create_run(exp, start_time=t0, run_name="tune-x")
    for k, v in {**params, "tune.metric": "val_bleu"}.items():
        client.log_param(parent.info.run_id, k, v)
    # (start s, epoch seconds, val_bleu per epoch): ASHA (rungs 4 and 1) let a and c train
    # all 4 epochs and stopped b after its first (0.5 below a's 1.0 at rung 1)
    measured = [(0, 10, [1.0, 2.0, 3.0, 4.0]), (1, 20, [0.5]), (25, 10, [2.0, 3.0, 3.5, 5.0])]
    end = t0
    for n, (start, secs, scores) in enumerate(measured):
        s0 = t0 + start * 1000
        kid = client.create_run(
            exp,
            start_time=s0,
            run_name=f"trial{n}",
            tags={"mlflow.parentRunId": parent.info.run_id},
        )
        for e, score in enumerate(scores, 1):
            ts = s0 + (2 + e * secs) * 1000
            client.log_metric(kid.info.run_id, "epoch_seconds", secs, timestamp=ts, step=e)
            client.log_metric(kid.info.run_id, "val_bleu", score, timestamp=ts, step=e)
        stop = s0 + (3 + len(scores) * secs) * 1000
        client.set_terminated(kid.info.run_id, end_time=stop)
        end = max(end, stop)
    client.set_terminated(parent.info.run_id, end_time=end + 1000)
    script = ROOT / "benchmarks" / "asha_replay.py"
    cmd = [sys.executable, str(script), "--tracking-uri", uri, "--rf", "16"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout
    out = json.loads(lines[0])
    assert out["sweep"]["trials"] == 3 and out["sweep"]["epochs_trained"] == 9
    own = out["replayed"]["rf4"]
    assert own["stops"] == [4, 1, 4] and own["same_stops_as_measured"]
    assert own["best"] == 5.0 and own["best_is_measured_best"]
    # the measured gap (b's end at 24 s to c's start at 25 s) and start-up (3 s) before each
    # trial's epochs: b's slot frees at 24 s (1 + 3 + 20), c ends 1 + 3 + 40 s after that
    assert abs(own["minutes"] * 60 - 68.0) < 0.5
    strict = out["replayed"]["rf16"]
    assert strict["rungs"] == [1] and strict["extrapolated"] == 0
    missing = tmp_path / "none" / "mlflow.db"
    cmd = [sys.executable, str(script), "--tracking-uri", f"sqlite:///{missing}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "no MLflow store" in proc.stderr
    assert "Traceback" not in proc.stderr and not missing.exists()
