from __future__ import annotations

import json
import stat

import pytest

from seq2seq.io import atomic_dir, atomic_file, write_json


def test_atomic_dir_replaces_whole_folder_on_success(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    with atomic_dir(out) as tmp:
        (tmp / "new.txt").write_text("new")
        assert not (out / "new.txt").exists()  # invisible until the block succeeds
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary leftovers
    assert stat.S_IMODE(out.stat().st_mode) & 0o055  # not private like mkdtemp's 0700


def test_atomic_dir_keeps_previous_outputs_on_error(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("previous")
    with pytest.raises(RuntimeError), atomic_dir(out) as tmp:
        (tmp / "half.txt").write_text("half-written")
        raise RuntimeError("interrupted")
    assert (out / "keep.txt").read_text() == "previous"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_atomic_file_and_write_json(tmp_path):
    target = tmp_path / "a.json"
    write_json(target, {"b": 1, "ä": "ü"})
    assert json.loads(target.read_text(encoding="utf-8")) == {"b": 1, "ä": "ü"}
    with pytest.raises(ValueError), atomic_file(target) as tmp:
        tmp.write_text("garbage")
        raise ValueError
    assert json.loads(target.read_text(encoding="utf-8")) == {"b": 1, "ä": "ü"}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]
