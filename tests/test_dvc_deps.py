"""Each DVC stage lists, as deps, every project module its command imports (transitively), so
that a code change reruns exactly the stages it can affect."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

# the stage command -> the module that implements it
ENTRY = {
    "download": "pipeline/stages/download.py",
    "clean": "pipeline/stages/preprocess.py",
    "tokenize": "pipeline/stages/preprocess.py",
    "reverse": "pipeline/stages/preprocess.py",
    "tune": "pipeline/stages/tune.py",
    "evaluate": "pipeline/stages/evaluate.py",
}
PACKAGES = ("pipeline", "seq2seq")
CLI = ROOT / "pipeline" / "cli.py"  # every stage runs through it; its commands import lazily


def _module_file(name: str) -> Path | None:
    if name.split(".")[0] not in PACKAGES:
        return None
    base = ROOT / name.replace(".", "/")
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(path: Path) -> set[Path]:
    """Project modules imported anywhere in `path` (top level or inside functions); for the
    CLI only its top level (each command imports its own stage module when it runs)."""
    found: set[Path] = set()
    tree = ast.parse(path.read_text())
    for node in tree.body if path == CLI else ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            if (f := _module_file(name)) is not None:
                found.add(f)
    return found


def closure(entry: Path) -> set[Path]:
    """`entry`, the CLI, and every project module they import, transitively."""
    todo, seen = [entry, CLI], {entry, CLI}
    while todo:
        for f in _imports(todo.pop()) - seen:
            seen.add(f)
            todo.append(f)
    return {f for f in seen if f.name != "__init__.py"}


def _covered(module: Path, deps: list[str]) -> bool:
    rel = module.relative_to(ROOT).as_posix()
    return any(rel == d or rel.startswith(d.rstrip("/") + "/") for d in deps)


STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize("stage", list(STAGES))
def test_stage_deps_cover_the_modules_it_imports(stage):
    command = STAGES[stage]["cmd"].split()
    assert command[0] == "scripts/pipeline" and command[1] == stage
    deps = [d for d in STAGES[stage]["deps"] if not d.startswith("${")]
    missing = sorted(
        m.relative_to(ROOT).as_posix()
        for m in closure(ROOT / ENTRY[stage])
        if not _covered(m, deps)
    )
    assert not missing, f"stage {stage} imports {missing} but does not list them as deps"


def test_the_closure_follows_function_level_imports():
    found = {p.relative_to(ROOT).as_posix() for p in closure(ROOT / ENTRY["tune"])}
    assert {"pipeline/trainloop.py", "seq2seq/model.py", "seq2seq/training.py"} <= found
