"""The download stage: corpora to raw/{split}.parquet + manifest.json + files/, atomically.

Multi30k comes from the shared mirror (/work/shared/data/multi30k), served over a local HTTP
server or read as a local folder; the CLI tests run the real `pipeline download`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import polars as pl
import pytest
from conftest import ROOT, pipeline_cmd
from corpus_server import closed_port_url, serve_dir

from pipeline.config import Config
from pipeline.errors import UserError
from pipeline.stages import download
from seq2seq.corpora import multi30k
from seq2seq.errors import DataError

SPLITS = ("train", "valid", "test")
PAIRS = {"train": 29_000, "valid": 1_014, "test": 1_000}  # published Multi30k sizes


def config(tmp_path: Path, **overrides: object) -> Config:
    return Config().with_overrides({"paths.raw": str(tmp_path / "raw"), **overrides})


def snapshot(folder: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under `folder` (and the folder's neighbours)."""
    files = {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }
    return {**files, "<siblings>": ",".join(sorted(p.name for p in folder.parent.iterdir()))}


def manifest(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "raw" / "manifest.json").read_text(encoding="utf-8"))


@pytest.fixture
def corrupt_mirror(multi30k_dir: Path, tmp_path: Path) -> Path:
    """A copy of the mirror whose French validation file has one byte changed."""
    copy = tmp_path / "corrupt"
    shutil.copytree(multi30k_dir, copy)
    bad = copy / "val.fr.gz"
    bad.chmod(0o644)
    data = bytearray(bad.read_bytes())
    data[100] ^= 0xFF
    bad.write_bytes(bytes(data))
    return copy


def test_multi30k_over_http_has_the_published_sizes_and_a_manifest(multi30k_dir, tmp_path):
    with serve_dir(multi30k_dir) as base:
        download.run(config(tmp_path, **{"data.corpus": "multi30k", "data.mirror": base}))
    raw = tmp_path / "raw"
    frames = {s: pl.read_parquet(raw / f"{s}.parquet") for s in SPLITS}
    assert {s: f.height for s, f in frames.items()} == PAIRS
    assert frames["train"].schema == pl.Schema({"src": pl.String, "tgt": pl.String})
    assert frames["test"]["tgt"][0] == "A man in an orange hat starring at something."
    m = manifest(tmp_path)
    assert (m["corpus"], m["source_lang"], m["target_lang"]) == ("multi30k", "de", "en")
    assert all(f["sha256"] == multi30k.SHA256[f["name"]] for f in m["files"])
    assert len(m["files"]) == 6 and m["files"][0]["source"] == f"{base}/train.de.gz"
    assert [f["lines"] for f in m["files"]] == [29_000, 29_000, 1_014, 1_014, 1_000, 1_000]
    for split in SPLITS:
        parquet = (raw / f"{split}.parquet").read_bytes()
        assert m["splits"][split]["sha256"] == hashlib.sha256(parquet).hexdigest()
    for f in m["files"]:
        assert (raw / "files" / f["name"]).read_bytes() == (multi30k_dir / f["name"]).read_bytes()


def test_corrupt_mirror_fails_on_the_checksum_and_keeps_nothing(corrupt_mirror, tmp_path):
    cfg = config(tmp_path, **{"data.corpus": "multi30k", "data.target_lang": "fr"})
    with serve_dir(corrupt_mirror) as base, pytest.raises(DataError) as err:
        download.run(cfg.with_overrides({"data.mirror": base}))
    assert "checksum mismatch for val.fr.gz" in str(err.value)
    assert multi30k.SHA256["val.fr.gz"] in str(err.value)
    assert not (tmp_path / "raw").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corrupt"]  # no temp folders left


def test_failed_run_leaves_the_previous_outputs_intact(multi30k_dir, corrupt_mirror, tmp_path):
    good = config(tmp_path, **{"data.corpus": "multi30k", "data.mirror": str(multi30k_dir)})
    download.run(good)  # local-folder mirror
    before = snapshot(tmp_path / "raw")
    with pytest.raises(DataError, match="checksum mismatch for val.fr.gz"):
        download.run(
            good.with_overrides({"data.mirror": str(corrupt_mirror), "data.target_lang": "fr"})
        )
    assert snapshot(tmp_path / "raw") == before
    with pytest.raises(DataError, match="sample: the generated corpus is German-English only"):
        download.run(good.with_overrides({"data.corpus": "sample", "data.target_lang": "fr"}))
    assert snapshot(tmp_path / "raw") == before


def test_previous_files_are_reused_without_network(multi30k_dir, tmp_path, capsys):
    cfg = config(tmp_path, **{"data.corpus": "multi30k", "data.mirror": str(multi30k_dir)})
    download.run(cfg)
    first = manifest(tmp_path)
    download.run(cfg.with_overrides({"data.mirror": closed_port_url()}))
    second = manifest(tmp_path)
    assert second["splits"] == first["splits"]
    assert [f["sha256"] for f in second["files"]] == [f["sha256"] for f in first["files"]]
    assert "6 file(s) reused" in capsys.readouterr().err.replace("\n", " ")


def test_env_mirror_fills_a_null_and_the_params_value_wins(multi30k_dir, tmp_path, monkeypatch):
    """The project's precedence rule: a params value wins, an environment variable fills a null."""
    monkeypatch.setenv("SEQ2SEQ_DATA_MIRROR", closed_port_url())
    download.run(
        config(
            tmp_path,
            **{
                "data.corpus": "multi30k",
                "data.target_lang": "fr",
                "data.mirror": str(multi30k_dir),
            },
        )
    )
    m = manifest(tmp_path)
    assert m["mirror"] == str(multi30k_dir) and m["splits"]["valid"]["pairs"] == 1_014
    with pytest.raises(UserError) as err:  # data.mirror null: the (unreachable) env mirror is used
        download.run(config(tmp_path / "b", **{"data.corpus": "multi30k"}))
    assert "cannot reach http://127.0.0.1" in str(err.value)
    assert "data.mirror" in err.value.fix and "SEQ2SEQ_DATA_MIRROR" in err.value.fix


@pytest.mark.parametrize(("src", "tgt"), [("cs", "en"), ("de", "cs")])
def test_multi30k_rejects_czech(tmp_path, src, tgt):
    cfg = config(
        tmp_path,
        **{
            "data.corpus": "multi30k",
            "data.source_lang": src,
            "data.target_lang": tgt,
            "data.mirror": closed_port_url(),
        },
    )
    with pytest.raises(DataError, match="no pinned task 1 raw files for cs .supported: de, en, fr"):
        download.run(cfg)
    assert not (tmp_path / "raw").exists()


def test_tatoeba_stage_reports_drops_in_manifest(tmp_path, capsys):
    path = tmp_path / "fra.txt"
    lines = [f"Go {i}.\tVa {i}.\tCC-BY" for i in range(40)] + ["broken line"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    cfg = config(
        tmp_path,
        **{
            "data.corpus": "tatoeba",
            "data.tatoeba.path": str(path),
            "data.source_lang": "en",
            "data.target_lang": "fr",
        },
    )
    download.run(cfg)
    m = manifest(tmp_path)
    assert m["dropped"] == {"missing_column": 1} and m["language"] == "fr"
    assert sum(s["pairs"] for s in m["splits"].values()) == 40
    assert m["files"][0]["lines"] == 41
    assert "warning" in capsys.readouterr().err


def test_missing_corpus_keys_are_named(tmp_path):
    with pytest.raises(UserError, match="data.tatoeba.path is not set"):
        download.run(config(tmp_path, **{"data.corpus": "tatoeba"}))
    with pytest.raises(UserError, match="data.files.valid, data.files.test not set"):
        download.run(config(tmp_path, **{"data.corpus": "files", "data.files.train": "t.{lang}"}))


def run_cli(cwd: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k != "SEQ2SEQ_DATA_MIRROR"}
    return subprocess.run(
        [*pipeline_cmd(), "download", "--params", str(ROOT / "params.yaml"), *args],
        cwd=cwd,
        env={**full_env, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("mirror", ["closed-port", "http://nonexistent.invalid/multi30k"])
def test_cli_unreachable_mirror_exits_2_with_one_line(tmp_path, mirror):
    mirror = closed_port_url() if mirror == "closed-port" else mirror
    proc = run_cli(tmp_path, "--set", "data.corpus=multi30k", "--set", f"data.mirror={mirror}")
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot reach " + mirror)
    assert "data.mirror" in lines[0] and "SEQ2SEQ_DATA_MIRROR" in lines[0]
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").iterdir())


def test_cli_downloads_multi30k_from_the_env_mirror(tmp_path, multi30k_dir):
    proc = run_cli(
        tmp_path, "--set", "data.corpus=multi30k", env={"SEQ2SEQ_DATA_MIRROR": str(multi30k_dir)}
    )
    assert proc.returncode == 0, proc.stderr
    m = json.loads((tmp_path / "data" / "raw" / "manifest.json").read_text(encoding="utf-8"))
    assert {s: v["pairs"] for s, v in m["splits"].items()} == PAIRS
    assert "train 29,000 / valid 1,014 / test 1,000" in proc.stderr.replace("\n", " ")


def test_sample_default_is_deterministic_and_follows_the_direction(tmp_path):
    cfg = config(tmp_path, **{"data.sample.num_pairs": 400})
    download.run(cfg)
    first = manifest(tmp_path)
    train = pl.read_parquet(tmp_path / "raw" / "train.parquet")
    assert (first["corpus"], first["source"], first["seed"]) == ("sample", "generated", 1234)
    assert first["num_pairs"] == sum(s["pairs"] for s in first["splits"].values()) == 400
    assert min(s["pairs"] for s in first["splits"].values()) >= 15  # ~5% of distinct sentences
    download.run(cfg)
    assert manifest(tmp_path) == first  # same seed, byte-identical parquet files
    download.run(cfg.with_overrides({"data.source_lang": "en", "data.target_lang": "de"}))
    swapped = pl.read_parquet(tmp_path / "raw" / "train.parquet")
    assert swapped["src"].to_list() == train["tgt"].to_list()
    download.run(cfg.with_overrides({"data.sample.seed": 99}))
    assert manifest(tmp_path)["splits"]["test"]["sha256"] != first["splits"]["test"]["sha256"]
