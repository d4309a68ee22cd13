"""Terminal output: one console, rich progress bars, and quiet-by-default logging."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True)


@contextmanager
def progress(description: str, total: float | None = None) -> Iterator[Callable[..., None]]:
    """A progress bar on stderr; yields `advance(n=1, total=None, description=None)`.

    Library functions take such a callable (`progress=`) and never import rich themselves.
    Hidden when stderr is not a terminal (CI, DVC logs) to keep logs clean.
    """
    bar = Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
        disable=not console.is_terminal,
    )
    with bar:
        task = bar.add_task(description, total=total)

        def advance(n: float = 1, total: float | None = None, description: str | None = None):
            kwargs: dict[str, Any] = {}
            if total is not None:
                kwargs["total"] = total
            if description is not None:
                kwargs["description"] = description
            bar.update(task, advance=n, **kwargs)

        yield advance


def info(message: str) -> None:
    """A progress or summary line on stderr (rich markup), never wrapped: logs stay greppable."""
    console.print(message, highlight=False, soft_wrap=True)


def epoch_line(metrics: Mapping[str, Any], epochs: int, prefix: str = "") -> str:
    """One compact progress line for an epoch report."""

    def num(key: str, fmt: str) -> str:
        v = metrics.get(key)
        return format(v, fmt) if isinstance(v, (int, float)) else "-"

    return (
        f"{prefix}epoch {int(metrics.get('epoch', 0))}/{epochs}  "
        f"train_loss {num('train_loss', '.3f')}  val_loss {num('val_loss', '.3f')}  "
        f"ppl {num('val_ppl', '.2f')}  BLEU {num('val_bleu', '.2f')}  "
        f"{num('tokens_per_s', ',.0f')} tok/s  {num('epoch_seconds', '.1f')} s"
    )
