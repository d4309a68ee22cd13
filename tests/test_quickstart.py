"""The README's Quickstart, as written, in a fresh clone, from a shell without the venv.

`make test` (the second line) is what CI runs (.ci/run); `make run` (the first) runs here: it
installs into the clone's own .venv and runs `dvc repro` on the built-in default, with a PATH
that holds no virtualenv, so the stage commands must find the interpreter by themselves.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT

README = ROOT / "README.md"


def quickstart_lines() -> list[str]:
    """The commands of the README's Quickstart code block, comments stripped."""
    text = README.read_text()
    section = text[text.index("## Quickstart") :]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "the Quickstart has no bash block"
    lines = [ln.split("#", 1)[0].strip() for ln in block.group(1).splitlines()]
    return [ln for ln in lines if ln]


def _is_venv_bin(folder: Path) -> bool:
    return (folder / "activate").exists() and (folder / "python").exists()


def _bare_env() -> dict[str, str]:
    """The environment of a new shell: no virtualenv on PATH, none active."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "CONDA_PREFIX", "RAY_ADDRESS", "MLFLOW_TRACKING_URI",
                        "SEQ2SEQ_DATA_MIRROR", "SEQ2SEQ_PYTHON", "PYTHONPATH")}  # fmt: skip
    path = [p for p in env.get("PATH", "").split(os.pathsep) if p and not _is_venv_bin(Path(p))]
    env["PATH"] = os.pathsep.join(path)
    return env


def test_quickstart_is_two_commands_and_ci_runs_the_test_one():
    lines = quickstart_lines()
    assert lines == ["make run", "make test"]
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert any(ln.split()[-2:] == lines[1].split() for ln in ci if not ln.startswith("#"))


# The README's example sentences and the content words their translations must have (the exact
# outputs printed in the README come from one run; another CPU may round differently).
EXAMPLES = {
    "Der kleine Hund läuft nicht.": {"the", "small", "dog", "does", "not", "run"},
    "Heute sieht die Frau zwei Katzen.": {"today", "woman", "sees", "two", "cats"},
    "Die Kinder lesen ein Buch.": {"children", "read", "book"},
}


def _check_readme_translations(clone: Path, env: dict[str, str]) -> None:
    readme = README.read_text()
    assert all(sentence in readme for sentence in EXAMPLES)
    command = [str(clone / ".venv" / "bin" / "pipeline"), "translate", *EXAMPLES]
    res = subprocess.run(command, cwd=clone, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert len(lines) == len(EXAMPLES)
    for (source, words), line in zip(EXAMPLES.items(), lines, strict=True):
        assert words <= set(re.findall(r"[a-z]+", line)), (source, line)


@pytest.mark.slow
def test_make_run_as_written_in_a_fresh_clone(tmp_path):
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, timeout=120)
    env = _bare_env()
    assert subprocess.run(["bash", "-c", "command -v dvc pipeline"], env=env).returncode != 0
    run_line = quickstart_lines()[0]
    res = subprocess.run(["bash", "-c", run_line], cwd=clone, env=env, capture_output=True,
                         text=True, timeout=2400)  # fmt: skip
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-4000:]
    for stage in ("download", "clean", "tokenize", "reverse", "tune", "evaluate"):
        assert f"Running stage '{stage}'" in out
    metrics = json.loads((clone / "metrics" / "eval.json").read_text())
    assert metrics["test_bleu"] >= 40.0, metrics  # the default run learns its corpus
    _check_readme_translations(clone, env)
    again = subprocess.run(["bash", "-c", run_line], cwd=clone, env=env, capture_output=True,
                           text=True, timeout=600)  # fmt: skip
    assert again.returncode == 0 and "Running stage" not in again.stdout
    assert "installing" not in again.stdout  # installed once: the second run goes straight on
