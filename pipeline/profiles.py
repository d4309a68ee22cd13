"""Versioned experiment profiles: profiles/<name>.yaml run as `dvc exp run -n <name> -S ...`.

A profile is a flat mapping of dotted config keys to values, committed beside params.yaml and
applied on top of it. `pipeline experiment NAME` checks the profile against the config schema
(an unknown key or a bad value fails at once, before DVC starts anything), then runs it as one
named DVC experiment: a `dvc exp show` row with its params, metrics and plots, plus the MLflow
runs its stages log. `--queue` only queues it (`dvc queue start` runs the queue).
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from pipeline.config import _UniqueKeyLoader, load_config
from pipeline.errors import UserError

PROFILES = Path("profiles")


def profile_path(name: str) -> Path:
    """profiles/<name>.yaml for a bare name; a path as given otherwise."""
    if name.endswith((".yaml", ".yml")) or "/" in name:
        return Path(name)
    return PROFILES / f"{name}.yaml"


def load_profile(name: str) -> dict[str, Any]:
    """The profile's {dotted key: value} overrides; UserError for every way it can be unusable."""
    path = profile_path(name)
    known = sorted(p.stem for p in PROFILES.glob("*.yaml")) if PROFILES.is_dir() else []
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "does not exist"
        raise UserError(
            f"profile {path} {what}",
            fix=f"choose one of: {', '.join(known)}" if known else "create it (key: value lines)",
        )
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # noqa: S506
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        reason = str(err).splitlines()[0]
        raise UserError(f"profile {path} is not valid YAML ({reason})", fix="correct it") from None
    if not isinstance(raw, dict) or not raw or not all(isinstance(k, str) for k in raw):
        raise UserError(
            f"profile {path} must be a mapping of dotted config keys to values",
            fix="write lines such as `train.epochs: 12`",
        )
    return raw


def yaml_value(value: Any) -> str:
    """A value as one line of YAML flow style (what `dvc exp run -S key=value` parses)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=1 << 20, allow_unicode=True)
    return text.removesuffix("\n").removesuffix("\n...").strip()


def dvc_command(name: str, overrides: dict[str, Any], queue: bool = False) -> list[str]:
    dvc = Path(sys.executable).with_name("dvc")
    cmd = [str(dvc) if dvc.exists() else "dvc", "exp", "run", "-n", name]
    if queue:
        cmd.append("--queue")
    for key, value in overrides.items():
        cmd += ["-S", f"{key}={yaml_value(value)}"]
    return cmd


def run(name: str, params: Path, *, queue: bool = False, dry_run: bool = False) -> int:
    """Check profile `name` against `params` and run it as the DVC experiment `name`; returns
    DVC's exit status (0 for a dry run, which only prints the command)."""
    overrides = load_profile(name)
    load_config(params).with_overrides(overrides)  # a bad key or value fails here, not in DVC
    cmd = dvc_command(profile_path(name).stem, overrides, queue)
    print(shlex.join(["dvc", *cmd[1:]]), flush=True)
    return 0 if dry_run else subprocess.call(cmd)
