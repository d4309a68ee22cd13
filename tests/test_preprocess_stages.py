"""pipeline.stages.preprocess: clean, tokenize, reverse on tiny parquet corpora, their errors,
atomicity, and an end-to-end run through the real CLI."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import polars as pl
import pytest
from conftest import pipeline_cmd

from pipeline.config import Config
from pipeline.stages import preprocess
from seq2seq import text
from seq2seq.errors import DataError
from seq2seq.vocab import UNK, Vocab

TRAIN = {
    "src": [
        "Der Hund läuft .",
        "Die Katze schläft .",
        "Der Hund läuft .",  # duplicate: dropped in train only
        "",  # empty
        "Der Hund sieht die Katze , die Katze sieht den Hund , und alle schlafen .",  # over-long
        "Ja",  # ratio outlier against a long target
        "Die Katze läuft .",
        "Der  Hund\tschläft\u00a0.",
        "Ein Vogel singt .",
    ],
    "tgt": [
        "The dog runs .",
        "The cat sleeps .",
        "The dog runs .",
        "Nothing",
        "The dog sees the cat .",
        "Yes , of course , I will do it .",
        "The cat runs .",
        "The dog sleeps .",
        "A bird sings .",
    ],
}
HELD_OUT = {
    "src": ["Der Hund läuft .", "Der Hund läuft .", "Ein Fisch schwimmt ."],
    "tgt": ["The dog runs .", "The dog runs .", "A fish swims ."],
}


def write_raw(folder: Path, train: dict = TRAIN, held_out: dict = HELD_OUT) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for split, data in (("train", train), ("valid", held_out), ("test", held_out)):
        pl.DataFrame(data, schema={"src": pl.String, "tgt": pl.String}).write_parquet(
            folder / f"{split}.parquet"
        )


def make_cfg(root: Path, **data) -> Config:
    overrides = {f"paths.{k}": str(root / k) for k in ("raw", "clean", "tokens", "prepared")}
    settings = {"max_len": 12, "max_ratio": 2.5, "min_freq": 1} | data
    overrides |= {f"data.{k}": v for k, v in settings.items()}
    return Config().with_overrides(overrides)


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    write_raw(tmp_path / "raw")
    return make_cfg(tmp_path)


def snapshot(folder: str | Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(Path(folder).iterdir())}


def run_all(cfg: Config) -> None:
    preprocess.clean(cfg)
    preprocess.tokenize(cfg)
    preprocess.reverse(cfg)


# ------------------------------------------------------------------------------------- clean
def test_clean_report_counts_each_reason(cfg: Config) -> None:
    report = preprocess.clean(cfg)
    assert report["train"] == {
        "rows_in": 9,
        "kept": 5,
        "dropped": {"empty": 1, "over_long": 1, "ratio": 1, "duplicate": 1},
    }
    # Held-out splits keep their duplicates.
    assert report["valid"]["kept"] == 3 and report["valid"]["dropped"]["duplicate"] == 0
    on_disk = json.loads((Path(cfg.paths.clean) / "report.json").read_text())
    assert on_disk == report


def test_clean_writes_normalised_pairs_in_order(cfg: Config) -> None:
    preprocess.clean(cfg)
    train = pl.read_parquet(Path(cfg.paths.clean) / "train.parquet")
    assert train.columns == ["src", "tgt"]
    assert train["src"].to_list() == [
        "Der Hund läuft .",
        "Die Katze schläft .",
        "Die Katze läuft .",
        "Der Hund schläft .",
        "Ein Vogel singt .",
    ]


def test_empty_train_after_clean_is_a_data_error_and_keeps_old_outputs(
    cfg: Config, tmp_path: Path
) -> None:
    preprocess.clean(cfg)
    before = snapshot(cfg.paths.clean)
    # Every train pair now too long: the stage fails after writing train to its temp folder.
    write_raw(tmp_path / "raw", train={"src": ["a b c"] * 3, "tgt": ["x y z"] * 3})
    with pytest.raises(DataError) as err:
        preprocess.clean(make_cfg(tmp_path, max_len=2))
    message = str(err.value)
    assert "'train'" in message and "rows in 3" in message and "'over_long': 3" in message
    assert "data.max_len" in message and "data.max_ratio" in message
    assert snapshot(cfg.paths.clean) == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_ten_megabyte_line_is_dropped_as_over_long(tmp_path: Path) -> None:
    train = {"src": [*TRAIN["src"], "wort " * 2_000_000], "tgt": [*TRAIN["tgt"], "word"]}
    write_raw(tmp_path / "raw", train=train)
    report = preprocess.clean(make_cfg(tmp_path))
    assert report["train"]["dropped"]["over_long"] == 2
    assert report["train"]["kept"] == 5


# ---------------------------------------------------------------------------------- bad input
def test_clean_before_download_names_path_and_command(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        preprocess.clean(make_cfg(tmp_path))
    assert str(tmp_path / "raw") in str(err.value)
    assert "pipeline download" in str(err.value) and "dvc repro" in str(err.value)


def test_missing_split_file(cfg: Config) -> None:
    (Path(cfg.paths.raw) / "test.parquet").unlink()
    with pytest.raises(DataError, match="test.parquet is missing"):
        preprocess.clean(cfg)


def test_missing_column_is_a_data_error(cfg: Config) -> None:
    pl.DataFrame({"src": ["a"], "en": ["b"]}).write_parquet(Path(cfg.paths.raw) / "valid.parquet")
    with pytest.raises(DataError, match=r"valid.parquet lacks the column\(s\) tgt"):
        preprocess.clean(cfg)


def test_wrong_dtype_is_a_data_error(cfg: Config) -> None:
    pl.DataFrame({"src": [1], "tgt": ["b"]}).write_parquet(Path(cfg.paths.raw) / "test.parquet")
    with pytest.raises(DataError, match=r"src: String .*src: Int64"):
        preprocess.clean(cfg)


def test_not_a_parquet_file(cfg: Config) -> None:
    (Path(cfg.paths.raw) / "train.parquet").write_text("src,tgt\na,b\n")
    with pytest.raises(DataError, match="not a readable parquet file"):
        preprocess.clean(cfg)


def test_tokenize_and_reverse_before_their_inputs(cfg: Config) -> None:
    with pytest.raises(DataError, match="pipeline clean"):
        preprocess.tokenize(cfg)
    preprocess.clean(cfg)
    with pytest.raises(DataError, match="pipeline tokenize"):
        preprocess.reverse(cfg)


def test_vocabulary_without_tokens_fails_and_keeps_old_outputs(cfg: Config, tmp_path: Path) -> None:
    run_all(cfg)
    before = snapshot(cfg.paths.tokens)
    with pytest.raises(DataError, match="min_freq"):
        preprocess.tokenize(make_cfg(tmp_path, min_freq=1000))
    assert snapshot(cfg.paths.tokens) == before


# ------------------------------------------------------------------------- tokenize, reverse
def test_tokenize_vocab_from_train_only(cfg: Config) -> None:
    preprocess.clean(cfg)
    vocabs = preprocess.tokenize(cfg)
    src = vocabs["src"]
    assert "fisch" not in src.stoi and "vogel" in src.stoi  # valid/test words never counted
    # Frequency desc, then token asc: "." 5, then "der"/"die"/"hund"/"katze"/... by count.
    assert src.itos[4:8] == (".", "der", "die", "hund")
    assert Vocab.load(Path(cfg.paths.tokens) / "vocab.src.json") == src
    valid = pl.read_parquet(Path(cfg.paths.tokens) / "valid.parquet")
    assert valid.schema == pl.Schema(preprocess.IDS_SCHEMA)
    assert valid["src_ids"][2].to_list() == [src.stoi["ein"], UNK, UNK, src.stoi["."]]


def test_tokenize_min_freq_and_max_size(cfg: Config, tmp_path: Path) -> None:
    preprocess.clean(cfg)
    vocabs = preprocess.tokenize(make_cfg(tmp_path, min_freq=2, max_size=10))
    assert vocabs["tgt"].itos[4:] == (".", "the", "cat", "dog", "runs", "sleeps")
    assert len(vocabs["src"]) <= 10


def test_reverse_flips_source_only(cfg: Config) -> None:
    preprocess.clean(cfg)
    preprocess.tokenize(cfg)
    meta = preprocess.reverse(cfg)
    train_ids = pl.read_parquet(Path(cfg.paths.prepared) / "train.parquet")["src_ids"].to_list()
    assert meta["max_source_tokens"] > 0
    for split in ("train", "valid", "test"):
        tokens = pl.read_parquet(Path(cfg.paths.tokens) / f"{split}.parquet")
        prepared = pl.read_parquet(Path(cfg.paths.prepared) / f"{split}.parquet")
        assert prepared.columns == ["src", "tgt", "src_ids", "tgt_ids"]
        assert prepared["tgt_ids"].equals(tokens["tgt_ids"])
        assert prepared["src"].equals(tokens["src"])
        assert [ids[::-1] for ids in prepared["src_ids"].to_list()] == tokens["src_ids"].to_list()
        assert meta["rows"][split] == prepared.height
    assert meta == {
        "source_lang": "de",
        "target_lang": "en",
        "lowercase": True,
        "reverse_source": True,
        "max_source_tokens": max(len(ids) for ids in train_ids),
        "rows": {"train": 5, "valid": 3, "test": 3},
        "vocab_size": {"src": len(Vocab.load(Path(cfg.paths.prepared) / "vocab.src.json")),
                       "tgt": len(Vocab.load(Path(cfg.paths.prepared) / "vocab.tgt.json"))},
    }  # fmt: skip
    assert json.loads((Path(cfg.paths.prepared) / "meta.json").read_text()) == meta


def test_reverse_source_off_copies_ids(cfg: Config, tmp_path: Path) -> None:
    preprocess.clean(cfg)
    preprocess.tokenize(cfg)
    preprocess.reverse(make_cfg(tmp_path, reverse_source=False))
    tokens = pl.read_parquet(Path(cfg.paths.tokens) / "train.parquet")
    assert pl.read_parquet(Path(cfg.paths.prepared) / "train.parquet").equals(tokens)


@pytest.mark.parametrize("lowercase", [True, False])
def test_prepare_source_equals_stage_ids(tmp_path: Path, lowercase: bool) -> None:
    cfg = make_cfg(tmp_path, lowercase=lowercase)
    write_raw(tmp_path / "raw")
    run_all(cfg)
    prepared = pl.read_parquet(Path(cfg.paths.prepared) / "valid.parquet")
    vocab = Vocab.load(Path(cfg.paths.prepared) / "vocab.src.json")
    raw = HELD_OUT["src"]  # valid keeps all rows, so raw and prepared rows align
    ids = text.prepare_source(raw, lowercase=lowercase, reverse=True, vocab=vocab)
    assert ids == prepared["src_ids"].to_list()


# ---------------------------------------------------------------------------------- the CLI
@pytest.mark.slow
def test_cli_runs_the_three_stages(tmp_path: Path) -> None:
    write_raw(tmp_path / "data" / "raw")
    params = tmp_path / "params.yaml"
    params.write_text("data:\n  max_len: 12\n  max_ratio: 2.5\n  min_freq: 1\n")

    def cli(*args: str) -> subprocess.CompletedProcess:
        cmd = [*pipeline_cmd(), *args, "--params", str(params)]
        return subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)

    for stage in ("clean", "tokenize", "reverse"):
        done = cli(stage)
        assert done.returncode == 0, done.stderr
        assert f"{stage}:" in done.stderr
    prepared = tmp_path / "data" / "prepared"
    assert sorted(p.name for p in prepared.iterdir()) == [
        "meta.json",
        "test.parquet",
        "train.parquet",
        "valid.parquet",
        "vocab.src.json",
        "vocab.tgt.json",
    ]
    assert json.loads((prepared / "meta.json").read_text())["rows"]["train"] == 5

    # A user error: one line naming the problem and the fix, exit code 2, outputs kept.
    before = snapshot(prepared)
    failed = cli("reverse", "--set", "paths.tokens=nowhere")
    assert failed.returncode == 2
    assert "nowhere does not exist" in failed.stderr and "pipeline tokenize" in failed.stderr
    assert "Traceback" not in failed.stderr
    assert snapshot(prepared) == before
