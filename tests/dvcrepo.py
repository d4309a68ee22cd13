"""Helpers for tests of the project's DVC setup: a temporary git+DVC copy of the project whose
stage outputs are fabricated and recorded with `dvc commit` (no stage runs), so `dvc exp show`,
`dvc push`/`dvc pull` and friends see a finished pipeline within seconds."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
from pathlib import Path

from conftest import ROOT, VENV_BIN

GIT_ID = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
          "GIT_COMMITTER_EMAIL": "t@t"}  # fmt: skip


def env(home: Path) -> dict[str, str]:
    """The environment of every command: HOME (where the default remote lives) is `home`."""
    out = {k: v for k, v in os.environ.items() if not k.startswith(("DVC_", "GIT_"))}
    return {**out, **GIT_ID, "HOME": str(home)}


def sh(args: list[str], cwd: Path, home: Path, timeout: int = 120) -> str:
    res = subprocess.run(args, cwd=cwd, env=env(home), capture_output=True, text=True,
                         timeout=timeout)  # fmt: skip
    assert res.returncode == 0, f"{args} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res.stdout


def dvc(args: list[str], cwd: Path, home: Path) -> str:
    return sh([str(VENV_BIN / "dvc"), *args], cwd, home)


def project_copy(dest: Path, home: Path) -> Path:
    """The project's tracked files (as in the working tree) in a new git repo, one commit."""
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.splitlines()  # fmt: skip
    for rel in files:
        if (ROOT / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dest / rel)
    sh(["git", "init", "-q"], dest, home)
    sh(["git", "add", "-A"], dest, home)
    sh(["git", "commit", "-qm", "project"], dest, home)
    return dest


def fabricate_outputs(repo: Path, home: Path, metrics: dict, seed: int = 0) -> None:
    """Stand-ins for every stage's outputs (text and binary), then `dvc commit` records them."""
    rng = random.Random(seed)
    for sub in ("data/raw", "data/clean", "data/tokens", "data/prepared", "models", "metrics"):
        shutil.rmtree(repo / sub, ignore_errors=True)
    for sub in ("raw", "clean", "tokens", "prepared"):
        for split in ("train", "valid", "test"):
            path = repo / "data" / sub / f"{split}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(rng.randbytes(2048 + 97 * len(split)))
    (repo / "data/prepared/meta.json").write_text(json.dumps({"rows": {"train": 3}}))
    best = repo / "models" / "best"
    best.mkdir(parents=True)
    (best / "checkpoint.pt").write_bytes(rng.randbytes(64 * 1024))
    (best / "config.json").write_text(json.dumps({"model": {"num_layers": 1}}))
    (repo / "models/curves").mkdir()
    (repo / "models/curves/t0.csv").write_text("epoch,train_loss,val_loss,val_ppl,val_bleu\n")
    (repo / "models/learning_curves.png").write_bytes(rng.randbytes(512))
    (repo / "metrics").mkdir()
    (repo / "metrics/eval.json").write_text(json.dumps(metrics))
    (repo / "metrics/bleu_by_length.json").write_text("[]")
    dvc(["commit", "-f", "-q"], repo, home)


def tree(root: Path, subs: tuple[str, ...] = ("data", "models", "metrics")) -> dict[str, bytes]:
    """Every file under `subs`, by relative path, with its bytes."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for sub in subs
        for p in sorted((root / sub).rglob("*"))
        if p.is_file() and p.name != ".gitkeep"
    }
