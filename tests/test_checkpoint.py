"""Checkpoints: exact round trips, and refusal of missing, corrupt, tampered, foreign files."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from torch import nn

from seq2seq.checkpoint import (
    FILENAME,
    FORMAT_VERSION,
    load_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
)
from seq2seq.errors import CheckpointError, DataError
from seq2seq.model import Seq2Seq
from seq2seq.text import Preprocessing
from seq2seq.vocab import Vocab

CONFIG = {
    "model": {"emb_dim": 8, "hidden_dim": 16, "num_layers": 2, "dropout": 0.1},
    "data": {
        "source_lang": "de",
        "target_lang": "en",
        "lowercase": True,
        "reverse_source": True,
        "max_len": 50,
    },
    "train": {"lr": 0.01, "optimizer": "adam"},
}
PREP = Preprocessing("de", "en", lowercase=True, reverse_source=True, max_source_tokens=12)
SRC = Vocab.from_tokens(["ein", "mann", "hund"])
TGT = Vocab.from_tokens(["a", "man", "dog", "."])


def make_trained():
    torch.manual_seed(0)
    model = Seq2Seq(len(SRC), len(TGT), 8, 16, 2, 0.1)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    src, lens = torch.tensor([[4, 5, 6], [5, 4, 0]]), torch.tensor([3, 2])
    for _ in range(2):
        logits, _ = model.decode_step(torch.tensor([2, 2]), model.encode(src, lens))
        loss = logits.logsumexp(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model, opt


def outputs(model: Seq2Seq) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        state = model.encode(torch.tensor([[4, 5, 6], [6, 0, 0]]), torch.tensor([3, 1]))
        logits, _ = model.decode_step(torch.tensor([2, 2]), state)
    return logits


def test_round_trip_restores_model_optimizer_and_metadata(tmp_path):
    model, opt = make_trained()
    path = save_checkpoint(
        tmp_path / "ckpt",
        model=model,
        optimizer=opt,
        epoch=3,
        preprocessing=PREP,
        config=CONFIG,
        src_vocab=SRC,
        tgt_vocab=TGT,
        metrics={"val_loss": 1.5, "val_bleu": 12},
    )
    assert path == tmp_path / "ckpt" / FILENAME and path.is_file()
    ckpt = load_checkpoint(tmp_path / "ckpt")  # folder form
    assert ckpt.epoch == 3 and ckpt.config == CONFIG and ckpt.format_version == FORMAT_VERSION
    assert ckpt.src_vocab == SRC and ckpt.tgt_vocab == TGT
    assert ckpt.metrics == {"val_loss": 1.5, "val_bleu": 12.0}
    assert ckpt.preprocessing == PREP
    assert ckpt.model_args == {
        "src_vocab_size": len(SRC),
        "tgt_vocab_size": len(TGT),
        "emb_dim": 8,
        "hidden_dim": 16,
        "num_layers": 2,
        "dropout": 0.1,
    }

    restored = model_from_checkpoint(ckpt)
    assert torch.equal(outputs(restored), outputs(model))
    opt2 = torch.optim.Adam(restored.parameters(), lr=0.5)
    opt2.load_state_dict(ckpt.optimizer_state)
    assert opt2.param_groups[0]["lr"] == 0.01
    for p, q in zip(model.parameters(), restored.parameters(), strict=True):
        assert torch.equal(opt.state[p]["exp_avg"], opt2.state[q]["exp_avg"])
        assert torch.equal(opt.state[p]["step"], opt2.state[q]["step"])


def test_file_path_without_optimizer_and_ddp_style_wrapper(tmp_path):
    model, _ = make_trained()

    class Wrapper(nn.Module):  # what DDP looks like from outside: the model under .module
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.module = inner

    path = save_checkpoint(
        tmp_path / "m.pt",
        model=Wrapper(model),
        epoch=1,
        preprocessing=PREP,
        config=CONFIG,
        src_vocab=SRC,
        tgt_vocab=TGT,
    )
    ckpt = load_checkpoint(path)
    assert not any(k.startswith("module.") for k in ckpt.model_state)
    assert ckpt.optimizer_state is None and ckpt.metrics == {}
    assert torch.equal(outputs(model_from_checkpoint(ckpt)), outputs(model))


def test_config_must_be_json_able(tmp_path):
    model, _ = make_trained()
    with pytest.raises(TypeError):
        save_checkpoint(
            tmp_path / "x.pt",
            model=model,
            epoch=0,
            preprocessing=PREP,
            config={"path": Path("a")},
            src_vocab=SRC,
            tgt_vocab=TGT,
        )
    assert not (tmp_path / "x.pt").exists()


@pytest.fixture
def saved(tmp_path) -> Path:
    model, opt = make_trained()
    return save_checkpoint(
        tmp_path / "good.pt",
        model=model,
        optimizer=opt,
        epoch=1,
        preprocessing=PREP,
        config=CONFIG,
        src_vocab=SRC,
        tgt_vocab=TGT,
    )


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist") as info:
        load_checkpoint(tmp_path / "nope")
    assert isinstance(info.value, DataError) and info.value.fix


def test_truncated_and_junk_files(saved, tmp_path):
    data = saved.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.pt").write_text("not a checkpoint at all\n")
    (tmp_path / "empty.pt").write_bytes(b"")
    for name in ("cut.pt", "junk.pt", "empty.pt"):
        with pytest.raises(CheckpointError, match="unreadable"):
            load_checkpoint(tmp_path / name)


class Armed:
    """Unpickling this would create a marker file: proof that code from the file ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickled_code_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    payload = {"format": "seq2seq-checkpoint", "format_version": 1, "model": Armed(marker)}
    torch.save(payload, tmp_path / "evil.pt")
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps(Armed(marker), protocol=2))
    (tmp_path / "evil5.pkl").write_bytes(pickle.dumps(Armed(marker), protocol=5))
    for name in ("evil.pt", "evil.pkl"):
        with pytest.raises(CheckpointError, match="refuses .*open.*nothing in it was run"):
            load_checkpoint(tmp_path / name)
    with pytest.raises(CheckpointError, match="unreadable.*nothing in it was run"):
        load_checkpoint(tmp_path / "evil5.pkl")  # the safe unpickler stops at protocol 5 framing
    assert not marker.exists()
    pickle.loads((tmp_path / "evil.pkl").read_bytes())  # an unsafe load does run it
    assert marker.exists()


def test_pickled_module_is_refused(tmp_path):
    model, _ = make_trained()
    torch.save(model, tmp_path / "module.pt")
    with pytest.raises(CheckpointError, match="Seq2Seq"):
        load_checkpoint(tmp_path / "module.pt")


def _tamper(src: Path, dst: Path, **changes) -> Path:
    raw = torch.load(src, weights_only=True)
    raw.update(changes)
    for k in [k for k, v in changes.items() if v is None]:
        raw.pop(k)
    torch.save(raw, dst)
    return dst


def test_tampered_or_foreign_contents(saved, tmp_path):
    cases = {
        "future.pt": ({"format_version": FORMAT_VERSION + 1}, "format version"),
        "foreign.pt": ({"format": None}, "not a seq2seq checkpoint"),
        "novocab.pt": ({"tgt_vocab": None}, "lacks"),
        "badvocab.pt": ({"src_vocab": ["a", "b"]}, "bad vocabulary"),
    }
    for name, (changes, message) in cases.items():
        with pytest.raises(CheckpointError, match=message):
            load_checkpoint(_tamper(saved, tmp_path / name, **changes))
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="not a seq2seq checkpoint"):
        load_checkpoint(tmp_path / "list.pt")


def test_weights_that_do_not_match_the_model_args(saved, tmp_path):
    raw = torch.load(saved, weights_only=True)
    wrong = {**raw["model_args"], "hidden_dim": 32}
    ckpt = load_checkpoint(_tamper(saved, tmp_path / "wrong.pt", model_args=wrong))
    with pytest.raises(CheckpointError, match="do not match"):
        model_from_checkpoint(ckpt)
    partial = {k: v for k, v in raw["model_args"].items() if k != "num_layers"}
    with pytest.raises(CheckpointError, match="how to build its model .*num_layers"):
        load_checkpoint(_tamper(saved, tmp_path / "partial.pt", model_args=partial))
    bigger = Vocab.from_tokens(["ein", "mann", "hund", "katze"])
    with pytest.raises(CheckpointError, match="do not match"):
        load_checkpoint(_tamper(saved, tmp_path / "vocab.pt", src_vocab=list(bigger.itos)))


def test_preprocessing_is_required_and_the_config_is_only_a_record(saved, tmp_path):
    raw = torch.load(saved, weights_only=True)
    no_rev = {k: v for k, v in raw["preprocessing"].items() if k != "reverse_source"}
    with pytest.raises(CheckpointError, match="how its data was prepared .*reverse_source"):
        load_checkpoint(_tamper(saved, tmp_path / "noprep.pt", preprocessing=no_rev))
    ckpt = load_checkpoint(_tamper(saved, tmp_path / "noconfig.pt", config={"data": {}}))
    assert ckpt.preprocessing == PREP  # the config is never read back
    model_from_checkpoint(ckpt)


def test_version_1_checkpoints_still_load(saved, tmp_path):
    """Version 1 stored only the config: model and preprocessing are derived from it."""
    v1 = _tamper(saved, tmp_path / "v1.pt", format_version=1, model_args=None, preprocessing=None)
    ckpt = load_checkpoint(v1)
    assert ckpt.format_version == 1
    assert ckpt.preprocessing == Preprocessing("de", "en", True, True, max_source_tokens=50)
    model, _ = make_trained()
    assert torch.equal(outputs(model_from_checkpoint(ckpt)), outputs(model))
    raw = torch.load(v1, weights_only=True)
    raw["config"] = {"model": CONFIG["model"]}
    torch.save(raw, tmp_path / "v1-nodata.pt")
    with pytest.raises(CheckpointError, match="how its data was prepared"):
        load_checkpoint(tmp_path / "v1-nodata.pt")
