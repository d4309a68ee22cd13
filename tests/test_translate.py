"""`pipeline translate` end to end on a tiny trained checkpoint (subprocess), plus its helpers."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import pipeline_cmd

from pipeline.config import Config
from pipeline.errors import UserError
from pipeline.stages import translate as stage
from seq2seq.checkpoint import load_checkpoint, save_checkpoint
from seq2seq.errors import CheckpointError
from seq2seq.model import Seq2Seq
from seq2seq.text import Preprocessing
from seq2seq.vocab import EOS, PAD, SOS, UNK, Vocab

PAIRS = [
    ("Ein Mann läuft.", "a man runs."),
    ("Eine Frau sieht einen Hund.", "a woman sees a dog."),
    ("Der Hund läuft im Park.", "the dog runs in the park."),
    ("Zwei Kinder spielen.", "two children play."),
    ("Ein Mann trägt ein T-Shirt.", "a man wears a t-shirt."),
    ("Ein Junge isst einen Apfel.", "a boy eats an apple."),
    ("Das Mädchen singt.", "the girl sings."),
    ("Ein Hund spielt im Schnee.", "a dog plays in the snow."),
    ("Zwei Männer sitzen auf einer Bank.", "two men sit on a bench."),
    ("Eine Katze schläft.", "a cat sleeps."),
]
TOKEN = re.compile(r"\w+|[^\w\s]")


def _tok(text: str) -> list[str]:
    return TOKEN.findall(text.lower())


def _pad(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    lens = torch.tensor([len(r) for r in rows])
    out = torch.full((len(rows), int(lens.max())), PAD, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r)
    return out, lens


def _train(src: list[list[int]], tgt: list[list[int]], v_src: int, v_tgt: int) -> Seq2Seq:
    """Teacher forcing over whole targets (dropout 0), full-batch Adam, one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = Seq2Seq(v_src, v_tgt, emb_dim=32, hidden_dim=64, num_layers=1, dropout=0.0)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    s, s_lens = _pad(src)
    t, _ = _pad([[SOS, *y, EOS] for y in tgt])
    for _ in range(150):
        out, _ = model.decoder(model.tgt_emb(t[:, :-1]), model.encode(s, s_lens))
        loss = F.cross_entropy(model.out(out).transpose(1, 2), t[:, 1:], ignore_index=PAD)
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.set_num_threads(threads)
    return model.eval()


@pytest.fixture(scope="module")
def ckpt_dir(tmp_path_factory) -> Path:
    """A folder with checkpoint.pt of a model that has memorised PAIRS (de -> en)."""
    src_tok = [_tok(s) for s, _ in PAIRS]
    tgt_tok = [_tok(t) for _, t in PAIRS]
    sv = Vocab.from_tokens(dict.fromkeys(w for s in src_tok for w in s))
    tv = Vocab.from_tokens(dict.fromkeys(w for t in tgt_tok for w in t))
    src = [sv.encode(s)[::-1] for s in src_tok]
    model = _train(src, [tv.encode(t) for t in tgt_tok], len(sv), len(tv))
    cfg = Config().with_overrides(
        {"model.emb_dim": 32, "model.hidden_dim": 64, "model.num_layers": 1, "model.dropout": 0.0}
    )
    folder = tmp_path_factory.mktemp("models") / "best"
    prep = Preprocessing("de", "en", lowercase=True, reverse_source=True, max_source_tokens=50)
    save_checkpoint(
        folder,
        model=model,
        epoch=1,
        preprocessing=prep,
        config=cfg.model_dump(),
        src_vocab=sv,
        tgt_vocab=tv,
    )
    return folder


def cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [*pipeline_cmd(), "translate", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_sentences_from_arguments(ckpt_dir):
    res = cli("-c", str(ckpt_dir), "--beam-size", "1", PAIRS[4][0], PAIRS[0][0])
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == [PAIRS[4][1], PAIRS[0][1]]


def test_file_with_empty_unknown_and_overlong_lines(ckpt_dir, tmp_path):
    long_line = " ".join(["Mann"] * 10_000)
    lines = [PAIRS[1][0], "", "Xylophon Quark Zebra!", long_line, "   ", PAIRS[2][0]]
    path = tmp_path / "in.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    res = cli("-c", str(ckpt_dir / "checkpoint.pt"), "-f", str(path), "--batch-size", "2")
    assert res.returncode == 0, res.stderr
    out = res.stdout.split("\n")
    assert out[-1] == "" and len(out) == len(lines) + 1  # one line per input line
    assert out[0] == PAIRS[1][1] and out[5] == PAIRS[2][1]
    assert out[1] == "" and out[4] == ""  # empty and blank lines stay empty
    assert out[2] and out[3]  # unknown words and the cut runaway line still get an output
    assert "line 4 has 10000 tokens" in res.stderr and "first 200" in res.stderr


def test_stdin_and_empty_stdin(ckpt_dir):
    res = cli("-c", str(ckpt_dir), "--beam-size", "2", stdin=f"{PAIRS[3][0]}\n{PAIRS[6][0]}\n")
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == [PAIRS[3][1], PAIRS[6][1]]
    res = cli("-c", str(ckpt_dir), stdin="")
    assert res.returncode == 0 and res.stdout == ""
    assert "nothing to translate" in res.stderr


def test_bad_checkpoint_is_one_line_exit_2(tmp_path):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(b"PK\x03\x04 not really a zip")
    res = cli("-c", str(path), "Ein Mann läuft.")
    assert res.returncode == 2 and res.stdout == ""
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "unreadable" in lines[0]


def test_in_process_errors_and_beam_output(ckpt_dir, tmp_path, capsys):
    with pytest.raises(CheckpointError, match="does not exist"):
        stage.run(tmp_path / "nope", ["x"], None, beam_size=1, batch_size=4)
    with pytest.raises(UserError, match="does not exist"):
        stage.run(ckpt_dir, None, tmp_path / "none.txt", beam_size=1, batch_size=4)
    with pytest.raises(UserError, match="not both"):
        stage.read_input(["a"], tmp_path / "x.txt")
    (tmp_path / "latin1.txt").write_bytes("Männer\n".encode("latin-1"))
    with pytest.raises(UserError, match="not UTF-8"):
        stage.read_input(None, tmp_path / "latin1.txt")
    texts = [s for s, _ in PAIRS]
    stage.run(ckpt_dir, texts, None, beam_size=5, batch_size=3)
    assert capsys.readouterr().out.splitlines() == [t for _, t in PAIRS]


def test_prepare_applies_the_checkpoints_preprocessing(ckpt_dir):
    ckpt = load_checkpoint(ckpt_dir)
    ids = stage.prepare(ckpt, ["Ein MANN  läuft.", "Quark"])
    assert ids[0] == ckpt.src_vocab.encode(["ein", "mann", "läuft", "."])[::-1]  # reversed
    assert ids[1] == [UNK]
    ids = stage.prepare(ckpt, [" ".join(f"w{i}" for i in range(500))])
    assert len(ids[0]) == 200  # 4 x data.max_len (50)


def test_ensemble_of_the_sweeps_top_checkpoints(ckpt_dir, tmp_path, capsys):
    """--ensemble K reads top/1..K beside the checkpoint's folder: two copies of the model
    translate exactly like it; more members than exported, or other vocabularies, are refused."""
    import shutil

    from seq2seq.checkpoint import copy_for_inference
    from seq2seq.checkpoint import model_from_checkpoint as build

    best = shutil.copytree(ckpt_dir, tmp_path / "models" / "best")
    for rank in (1, 2):
        copy_for_inference(best, tmp_path / "models" / "top" / str(rank))
    texts = [s for s, _ in PAIRS]
    stage.run(best, texts, None, beam_size=3, batch_size=6, ensemble=2)
    assert capsys.readouterr().out.splitlines() == [t for _, t in PAIRS]
    with pytest.raises(UserError, match="--ensemble is 3, but .*top holds 2"):
        stage.run(best, texts, None, beam_size=3, batch_size=6, ensemble=3)
    ckpt = load_checkpoint(best)
    src = Vocab((*ckpt.src_vocab.itos[:-1], "quark"))  # same size, one other word
    save_checkpoint(
        tmp_path / "models" / "top" / "2",
        model=build(ckpt),
        epoch=1,
        preprocessing=ckpt.preprocessing,
        src_vocab=src,
        tgt_vocab=ckpt.tgt_vocab,
    )
    with pytest.raises(UserError, match="different src vocabularies"):
        stage.run(best, texts, None, beam_size=1, batch_size=6, ensemble=2)
    res = cli("-c", str(best), "--ensemble", "2", PAIRS[0][0])  # the option, end to end
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.count("\n") == 1 and "different src vocabularies" in res.stderr
