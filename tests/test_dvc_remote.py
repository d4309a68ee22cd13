"""`dvc push` / `dvc pull` with the project's committed default remote (`local`, a folder under
~/.cache): a temporary copy of the project with fabricated, `dvc commit`ed stage outputs
(data/, models/, metrics/) pushes them; then outputs and cache are deleted and pulled back, and
a fresh `git clone` pulls them too, byte for byte. HOME points into the test's temp folder, so
the user's real ~/.cache is never touched."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from dvcrepo import dvc, fabricate_outputs, project_copy, sh, tree

METRICS = {"test_bleu": 21.5, "test_chrf": 40.5, "test_ppl": 8.25}


@pytest.fixture(scope="module")
def pushed(tmp_path_factory):
    root = tmp_path_factory.mktemp("remote")
    home = root / "home"
    proj = project_copy(root / "proj", home)
    fabricate_outputs(proj, home, METRICS)
    sh(["git", "add", "dvc.lock"], proj, home)
    sh(["git", "commit", "-qm", "results"], proj, home)
    original = tree(proj)
    assert len(original) >= 15 and "models/best/checkpoint.pt" in original
    dvc(["push"], proj, home)
    return root, home, proj, original


def _remote_files(home: Path) -> list[Path]:
    return [p for p in (home / ".cache" / "seq2seq-dvc-remote").rglob("*") if p.is_file()]


def test_default_remote_is_a_local_folder_under_home(pushed):
    _, home, proj, _ = pushed
    assert dvc(["remote", "default"], proj, home).strip() == "local"
    listed = dvc(["remote", "list"], proj, home)
    assert str(home / ".cache" / "seq2seq-dvc-remote") in listed
    assert _remote_files(home)  # the push wrote content-addressed files there
    assert json.loads(dvc(["status", "--cloud", "--json"], proj, home)) == {}  # in sync


def test_pull_restores_deleted_outputs_and_cache_byte_for_byte(pushed):
    _, home, proj, original = pushed
    for sub in ("data/raw", "data/clean", "data/tokens", "data/prepared", "models", "metrics"):
        shutil.rmtree(proj / sub)
    shutil.rmtree(proj / ".dvc" / "cache")
    assert not tree(proj)
    dvc(["pull"], proj, home)
    assert tree(proj) == original


def test_fresh_clone_pulls_everything(pushed):
    root, home, proj, original = pushed
    clone = root / "clone"
    sh(["git", "clone", "-q", str(proj), str(clone)], root, home)
    assert not tree(clone)
    dvc(["pull"], clone, home)
    assert tree(clone) == original
    assert json.loads(dvc(["status", "--json"], clone, home)) == {}  # outputs match dvc.lock
