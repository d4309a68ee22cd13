"""The application layer: Typer CLI, DVC stage functions, config, Ray Train/Tune and MLflow glue.

`app` is exported here so that `typer pipeline run <command>` finds it.
"""

from pipeline.cli import app

__all__ = ["app"]
