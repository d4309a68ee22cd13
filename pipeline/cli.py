"""The `pipeline` command: one sub-command per DVC stage, plus `train`, `translate`, `figures`.

Commands are thin: load the config (params.yaml + --set overrides), call a stage function in
pipeline/stages/, print a one-line error for user mistakes. Heavy imports (torch, ray, mlflow,
polars) happen inside the stage modules so that `pipeline --help` stays fast.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from pipeline.config import Config, EvaluateConfig, load_config
from seq2seq.errors import DataError

DECODE = EvaluateConfig()  # translate's defaults: the config schema's

app = typer.Typer(
    name="pipeline",
    help="LSTM seq2seq translation (Sutskever et al., 2014): data stages, Ray Train/Tune, MLflow.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ParamsOpt = Annotated[
    Path, typer.Option("--params", "-p", help="Config file (params.yaml).", show_default=True)
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        "-s",
        help="Override a config key, e.g. --set train.epochs=3 (repeatable; value parsed as YAML).",
    ),
]
VerboseOpt = Annotated[
    bool, typer.Option("--verbose", "-v", help="Show library logs (Ray, MLflow) in full.")
]


def _user_errors(fn: Callable) -> Callable:
    """Print a user error in one line and exit 2, however the app is invoked.

    (`pipeline`, `python -m pipeline` and `typer pipeline run` all reach the commands, but only
    the first goes through `main()`, so the handling lives on the commands themselves.)
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except DataError as err:
            from pipeline.ui import console

            console.print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper


def _config(params: Path, overrides: list[str] | None, extra: dict | None = None) -> Config:
    cfg = load_config(params, overrides)
    return cfg.with_overrides(extra) if extra else cfg


@app.command()
@_user_errors
def download(params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None) -> None:
    """Materialise the configured corpus under data/raw with a manifest (sha256, line counts)."""
    from pipeline.stages import download as stage

    stage.run(_config(params, set_))


@app.command()
@_user_errors
def clean(params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None) -> None:
    """NFC, whitespace, empty/over-long/ratio-outlier/duplicate pairs; writes a report."""
    from pipeline.stages import preprocess as stage

    stage.clean(_config(params, set_))


@app.command()
@_user_errors
def tokenize(params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None) -> None:
    """Lower-case, split words and punctuation, build vocabularies, map tokens to ids."""
    from pipeline.stages import preprocess as stage

    stage.tokenize(_config(params, set_))


@app.command()
@_user_errors
def reverse(params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None) -> None:
    """Reverse source token order (data.reverse_source) and write the training-ready splits."""
    from pipeline.stages import preprocess as stage

    stage.reverse(_config(params, set_))


@app.command()
@_user_errors
def train(
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
    fresh: Annotated[
        bool,
        typer.Option(
            "--fresh", help="Start over: the same config and data otherwise resume the stored run."
        ),
    ] = False,
    verbose: VerboseOpt = False,
) -> None:
    """One Ray Train DDP run of the params.yaml config (no sweep), tracked in MLflow.

    Re-running the same config on the same data resumes its stored run (a finished run trains
    nothing more); --fresh discards it and starts a new run.
    """
    from pipeline.stages import train as stage

    stage.run(_config(params, set_), verbose=verbose, fresh=fresh)


@app.command()
@_user_errors
def tune(
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
    num_samples: Annotated[
        int | None, typer.Option(help="Trials to sample (overrides tune.num_samples).", min=1)
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue an interrupted sweep.")
    ] = False,
    verbose: VerboseOpt = False,
) -> None:
    """Ray Tune sweep (ASHA) over tune.search_space; best checkpoint to models/best."""
    from pipeline.stages import tune as stage

    extra = {"tune.num_samples": num_samples} if num_samples else None
    stage.run(_config(params, set_, extra), resume=resume, verbose=verbose)


@app.command()
@_user_errors
def evaluate(
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
    checkpoint: Annotated[
        Path | None, typer.Option(help="Checkpoint to evaluate (default: models/best).")
    ] = None,
    verbose: VerboseOpt = False,
) -> None:
    """Test-set BLEU (sacreBLEU), chrF, perplexity, greedy and beam; metrics/eval.json."""
    from pipeline.stages import evaluate as stage

    stage.run(_config(params, set_), checkpoint=checkpoint, verbose=verbose)


@app.command()
@_user_errors
def translate(
    sentences: Annotated[
        list[str] | None, typer.Argument(help="Sentences to translate (default: read stdin).")
    ] = None,
    checkpoint: Annotated[
        Path, typer.Option("--checkpoint", "-c", help="Checkpoint file or folder.")
    ] = Path("models/best"),
    input_file: Annotated[
        Path | None, typer.Option("--file", "-f", help="Translate each line of this file.")
    ] = None,
    beam_size: Annotated[int, typer.Option(min=1, help="1 means greedy.")] = DECODE.beam_size,
    batch_size: Annotated[
        int, typer.Option(min=1, help="Decoder rows per batch: sentences x beam size.")
    ] = DECODE.batch_size,
    ensemble: Annotated[
        int,
        typer.Option(
            min=1,
            help="Decode with the sweep's top K checkpoints (top/1..K beside the --checkpoint "
            "folder: models/top).",
        ),
    ] = DECODE.ensemble,
) -> None:
    """Translate sentences with a checkpoint (its own cleaning, tokenisation and reversal)."""
    from pipeline.stages import translate as stage

    stage.run(
        checkpoint,
        sentences,
        input_file,
        beam_size=beam_size,
        batch_size=batch_size,
        ensemble=ensemble,
    )


@app.command()
@_user_errors
def figures(
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
    checkpoint: Annotated[
        Path | None, typer.Option(help="Checkpoint to draw (default: models/best).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="PNG to write (default: metrics/encoder_pca.png).")
    ] = None,
) -> None:
    """The paper's Figure 2: a 2-D PCA of encoder states of German minimal pairs (PNG, MLflow)."""
    from pipeline.stages import figures as stage

    stage.run(_config(params, set_), checkpoint=checkpoint, out=out)


@app.command()
@_user_errors
def experiment(
    profile: Annotated[str, typer.Argument(help="A profile name (profiles/NAME.yaml) or path.")],
    params: ParamsOpt = Path("params.yaml"),
    queue: Annotated[
        bool, typer.Option("--queue", help="Only queue it (`dvc queue start` runs the queue).")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Check the profile and print the dvc command.")
    ] = False,
) -> None:
    """Run a versioned profile as a DVC experiment: `dvc exp run -n NAME -S key=value ...`."""
    from pipeline import profiles

    status = profiles.run(profile, params, queue=queue, dry_run=dry_run)
    if status:
        raise typer.Exit(status)


@app.command()
@_user_errors
def claim(
    name: Annotated[str, typer.Argument(help="reversal | depth | teacher-forcing")],
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
    profile: Annotated[
        str | None,
        typer.Option(help="A profile (profiles/NAME.yaml) applied to params before --set."),
    ] = None,
    seeds: Annotated[int, typer.Option(help="Runs per arm (train.seed 1..N).", min=1)] = 2,
    rescore: Annotated[
        bool,
        typer.Option(
            "--rescore", help="Score the runs an earlier `pipeline claim NAME` trained again."
        ),
    ] = False,
    verbose: VerboseOpt = False,
) -> None:
    """A paper claim as equal-budget runs (arms x seeds), scored on test: claims/NAME/."""
    from pipeline.config import parse_override
    from pipeline.profiles import load_profile
    from pipeline.stages import claims

    claims.claim(name)  # an unknown claim fails before anything is read
    cfg = load_config(params)
    overrides = load_profile(profile) if profile else {}
    overrides.update(parse_override(o) for o in set_ or [])
    cfg = cfg.with_overrides(overrides) if overrides else cfg
    claims.run(cfg, name, seeds, verbose, rescore=rescore)


server_app = typer.Typer(
    help="A tracking server for a team: `mlflow server` on PostgreSQL, artifacts in a folder, "
    "both on 127.0.0.1 (pipeline/server.py).",
    no_args_is_help=True,
)
app.add_typer(server_app, name="server")
ServerDirOpt = Annotated[
    Path, typer.Option("--dir", help="The server's folder: database, logs, server.json.")
]


def _server_lines(srv, status: str) -> None:  # noqa: ANN001 - a pipeline.server.Server
    from pipeline.server import describe
    from pipeline.ui import info

    info(f"{status}: {describe(srv)}")
    typer.echo(f"mlflow.tracking_uri: {srv.uri}")  # stdout: the line for params.yaml


@server_app.command("start")
@_user_errors
def server_start(
    dir_: ServerDirOpt = Path(".mlflow-server"),
    port: Annotated[
        int | None, typer.Option(help="MLflow's port (default 5000 or the last one; 0: free).")
    ] = None,
    pg_port: Annotated[
        int | None, typer.Option(help="PostgreSQL's port (default a free one or the last one).")
    ] = None,
    artifacts: Annotated[
        Path | None, typer.Option(help="The shared artifacts folder (default DIR/artifacts).")
    ] = None,
    workers: Annotated[int | None, typer.Option(help="MLflow's request workers.")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for both to answer.")] = 90.0,
) -> None:
    """Start PostgreSQL and `mlflow server` (initialised on the first start) in the background;
    prints the mlflow.tracking_uri to use."""
    from pipeline import server

    options = {"port": port, "pg_port": pg_port, "artifacts": artifacts, "workers": workers}
    srv, started = server.start(dir_, timeout=timeout, **options)
    _server_lines(srv, "started" if started else "already running")


@server_app.command("stop")
@_user_errors
def server_stop(dir_: ServerDirOpt = Path(".mlflow-server")) -> None:
    """Stop the tracking server and its PostgreSQL (by their recorded process ids)."""
    from pipeline import server
    from pipeline.errors import UserError
    from pipeline.ui import info

    srv = server.load(dir_)
    if srv is None:
        info(f"no server recorded in {dir_}: nothing to stop")
        return
    if not server.has_processes(srv):
        info(f"not running: the server of {dir_} was already stopped")
        return
    left = server.stop(srv)
    if left:
        raise UserError(f"still running after stop: {', '.join(left)}", fix="end them yourself")
    info(f"stopped: the tracking server and PostgreSQL of {dir_}")


@server_app.command("status")
@_user_errors
def server_status(dir_: ServerDirOpt = Path(".mlflow-server")) -> None:
    """Is the server up? Prints the mlflow.tracking_uri to use; exit 3 when it is not up."""
    from pipeline import server
    from pipeline.ui import info

    srv = server.load(dir_)
    up = server.running(srv) if srv is not None else {}
    if srv is not None and all(up.values()):
        _server_lines(srv, "running")
        return
    down = ", ".join(k for k, v in up.items() if not v) or "no server recorded"
    info(f"not running ({down}) in {dir_}: start it with `pipeline server start`")
    raise typer.Exit(3)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
