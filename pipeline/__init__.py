"""The application layer: Typer CLI, DVC stage functions, config, Ray Train/Tune and MLflow glue.

`app` (the Typer CLI) is exported here so that `typer pipeline run <command>` finds it. It is
imported on first use: Ray's trial, controller and worker processes import modules of this
package but never the CLI (Typer, Rich and every command's imports: a few tenths of a second of
CPU per process, and a 20-trial sweep starts over a hundred of them).
"""

from typing import Any

__all__ = ["app"]


def __getattr__(name: str) -> Any:
    if name == "app":
        from pipeline.cli import app

        return app
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), "app"])
