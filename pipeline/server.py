"""A tracking server for a team: `mlflow server` backed by PostgreSQL, artifacts in a folder.

`pipeline server start` sets up and starts, in a data folder (default `.mlflow-server/` in the
current directory; git- and DVC-ignored):

    postgres/       a PostgreSQL cluster (initdb on the first start: superuser and database
                    `mlflow`, password-less (trust) logins only over TCP from 127.0.0.1, no
                    Unix socket)
    postgres.log    its log
    artifacts/      the runs' artifacts, unless `--artifacts` names a shared folder
    mlflow.log      the tracking server's log
    server.json     ports, folders and process ids: what `stop` and `status` read, and the
                    defaults of the next `start`

Both servers listen on 127.0.0.1 only. PostgreSQL refuses to run as root: under root, initdb
and postgres run as an unprivileged user (`postgres`, which Debian's package creates) that owns
the database folder. `stop` ends both by their recorded process ids, checked to still be them
(a recorded id may have been reused since), never by name.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import UserError

HOST = "127.0.0.1"
DEFAULT_DIR = Path(".mlflow-server")
DEFAULT_PORT = 5000
DB = "mlflow"  # the database, and the PostgreSQL role that owns it (the cluster's superuser)
PG_LIB = Path("/usr/lib/postgresql")  # Debian's <version>/bin folders
PG_OS_USER = "postgres"  # who runs PostgreSQL when we are root
START_TIMEOUT_S = 90.0
STATE_FILE = "server.json"
# SQLAlchemy 2.1 maps a plain postgresql:// URI to psycopg 3; the project installs psycopg2.
DRIVER = "postgresql+psycopg2"
HBA = (
    "# written by `pipeline server`: the mlflow role over TCP from this machine, no password\n"
    f"host    all    {DB}    127.0.0.1/32    trust\n"
)
CONF = (
    "\n# written by `pipeline server`: TCP on 127.0.0.1 only, no Unix socket\n"
    "listen_addresses = '127.0.0.1'\n"
    "unix_socket_directories = ''\n"
)


@dataclass
class Server:
    """One server's record (server.json)."""

    root: str
    port: int
    pg_port: int
    artifacts: str
    workers: int = 1
    pg_user: str | None = None  # the OS user PostgreSQL runs as (None: ours)
    mlflow_pid: int | None = None  # leader of the tracking server's process group
    postgres_pid: int | None = None  # the postmaster

    @property
    def uri(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def backend_uri(self) -> str:
        return f"{DRIVER}://{DB}@{HOST}:{self.pg_port}/{DB}"

    @property
    def pgdata(self) -> Path:
        return Path(self.root) / "postgres"

    def log(self, name: str) -> Path:
        return Path(self.root) / f"{name}.log"


# ----------------------------------------------------------------------------- the record
def load(root: Path) -> Server | None:
    """The server recorded in `root`, or None."""
    path = root / STATE_FILE
    if not path.is_file():
        return None
    try:
        return Server(**json.loads(path.read_text()))
    except (ValueError, TypeError) as err:
        raise UserError(
            f"{path} is not a server record ({err})",
            fix=f"end the processes it named yourself, then delete {path}",
        ) from None


def _save(server: Server) -> None:
    path = Path(server.root) / STATE_FILE
    tmp = path.with_name(STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(asdict(server), indent=2) + "\n")
    tmp.replace(path)


# ------------------------------------------------------------------------------ processes
def _stat(pid: int) -> tuple[str, int] | None:
    """(state letter, process group) of process `pid`, None when there is none."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    fields = text.rsplit(")", 1)[1].split()
    return fields[0], int(fields[2])


def alive(pid: int | None) -> bool:
    """`pid` runs (a zombie, ended but not yet reaped, does not)."""
    stat = _stat(pid) if pid else None
    return stat is not None and stat[0] not in "ZXx"


def group_members(pgid: int) -> list[int]:
    """The live processes of process group `pgid`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None and stat[1] == pgid and stat[0] not in "ZXx":
                found.append(int(entry.name))
    return found


def _cmdline(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


def _ours(pgid: int | None, word: str) -> bool:
    """Process group `pgid` still has a process whose command line names `word`."""
    return bool(pgid) and any(word in _cmdline(p) for p in group_members(pgid or 0))


def _wait_gone(pgid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while group_members(pgid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


# ------------------------------------------------------------------------------- PostgreSQL
def _version(bin_dir: Path) -> int:
    name = bin_dir.parent.name
    return int(name) if name.isdigit() else 0


def pg_bin(name: str) -> Path:
    """A PostgreSQL server program (initdb, postgres): beside `initdb` on PATH, else from the
    newest /usr/lib/postgresql/<version>/bin (Debian's place, not on PATH)."""
    found = shutil.which("initdb")
    dirs = [Path(found).resolve().parent] if found else []
    dirs += sorted(PG_LIB.glob("*/bin"), key=_version, reverse=True)
    for folder in dirs:
        if (folder / name).is_file():
            return folder / name
    raise UserError(
        f"PostgreSQL is not installed (no {name} on PATH or in /usr/lib/postgresql/*/bin)",
        fix="bash scripts/install.sh installs Debian's postgresql package "
        "(or: apt-get install postgresql)",
    )


def _pg_os_user(name: str | None) -> str | None:
    """Whom PostgreSQL runs as: ourselves, or under root an unprivileged user."""
    if os.geteuid() != 0:
        return None
    name = name or PG_OS_USER
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        entry = None
    if entry is None or entry.pw_uid == 0:
        raise UserError(
            f"PostgreSQL refuses to run as root, and there is no unprivileged user {name!r} "
            "to run it as",
            fix="create one (useradd --system postgres; Debian's postgresql package does) or "
            "run the command as an unprivileged user",
        )
    return name


def _as(user: str | None) -> dict[str, Any]:
    """subprocess arguments that run a program as `user` (none: as ourselves)."""
    if user is None:
        return {}
    entry = pwd.getpwnam(user)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": [], "cwd": "/"}


def _check_reachable(folder: Path, user: str | None) -> None:
    if user is None:
        return
    probe = ["test", "-w", str(folder), "-a", "-x", str(folder)]
    if subprocess.run(probe, timeout=10, **_as(user)).returncode != 0:
        raise UserError(
            f"the {user} user (PostgreSQL runs as it under root) cannot reach {folder}",
            fix="choose a --dir whose parent folders others may enter (mode o+x), "
            "e.g. under /srv or /var/tmp",
        )


def init_postgres(server: Server) -> None:
    """A new database cluster in server.pgdata (nothing to do when one is there)."""
    pgdata = server.pgdata
    if (pgdata / "PG_VERSION").is_file():
        return
    initdb = pg_bin("initdb")
    pgdata.mkdir(mode=0o700, parents=True, exist_ok=True)
    if server.pg_user:
        shutil.chown(pgdata, server.pg_user, server.pg_user)
    _check_reachable(pgdata, server.pg_user)
    cmd = [str(initdb), "-D", str(pgdata), "-U", DB, "--auth=trust", "-E", "UTF8", "--no-locale"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, **_as(server.pg_user))
    if out.returncode != 0:
        raise UserError(
            f"initdb failed in {pgdata}: {_last_line(out.stderr or out.stdout)}",
            fix=f"remove {pgdata} if it is left half made, then start again",
        )
    (pgdata / "pg_hba.conf").write_text(HBA)  # overwriting keeps the owner
    with (pgdata / "postgresql.conf").open("a") as conf:
        conf.write(CONF)


def _pg_connect(server: Server, dbname: str) -> Any:
    import psycopg2

    return psycopg2.connect(
        host=HOST, port=server.pg_port, user=DB, dbname=dbname, connect_timeout=2
    )


def _pg_ready(server: Server) -> bool:
    import psycopg2

    try:
        _pg_connect(server, "postgres").close()
    except psycopg2.OperationalError:
        return False
    return True


def start_postgres(server: Server, deadline: float) -> None:
    """Start the postmaster in its own session, wait until it takes connections, and create
    the `mlflow` database if missing."""
    cmd = [str(pg_bin("postgres")), "-D", str(server.pgdata), "-p", str(server.pg_port)]
    with server.log("postgres").open("ab") as log:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **_as(server.pg_user),
        )
    server.postgres_pid = proc.pid
    _save(server)
    _wait(lambda: _pg_ready(server), proc, deadline, "PostgreSQL", server.log("postgres"))
    conn = _pg_connect(server, "postgres")
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB,))
            if cur.fetchone() is None:
                cur.execute(f"CREATE DATABASE {DB} OWNER {DB}")
    finally:
        conn.close()


# ------------------------------------------------------------------------------------ MLflow
def healthy(uri: str, timeout: float = 2.0) -> bool:
    """The tracking server at `uri` answers /health with 200 within `timeout` (no proxy)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"{uri}/health", timeout=timeout) as res:
            return res.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def mlflow_command(server: Server) -> list[str]:
    exe = Path(sys.executable).with_name("mlflow")
    base = [str(exe)] if exe.is_file() else [sys.executable, "-m", "mlflow"]
    return base + [
        "server",
        "--backend-store-uri", server.backend_uri,
        "--artifacts-destination", server.artifacts,
        "--host", HOST,
        "--port", str(server.port),
        "--workers", str(server.workers),
    ]  # fmt: skip


def start_mlflow(server: Server, deadline: float) -> None:
    """Start `mlflow server` in its own session and wait until /health answers. MLflow's job
    runner (GenAI scorers: 8 more processes) stays off unless the environment turns it on."""
    env = {**os.environ}
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    with server.log("mlflow").open("ab") as log:
        proc = subprocess.Popen(
            mlflow_command(server),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=server.root,
            env=env,
        )
    server.mlflow_pid = proc.pid
    _save(server)
    _wait(lambda: healthy(server.uri), proc, deadline, "the MLflow server", server.log("mlflow"))


# ------------------------------------------------------------------------------- start/stop
def _last_line(text_or_log: str | Path) -> str:
    if isinstance(text_or_log, Path):
        try:
            text = text_or_log.read_text(errors="replace")[-20000:]
        except OSError:
            return "no log"
    else:
        text = text_or_log
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else "nothing logged"


def _wait(
    ready: Callable[[], bool], proc: subprocess.Popen, deadline: float, what: str, log: Path
) -> None:
    while not ready():
        if proc.poll() is not None:
            raise UserError(
                f"{what} exited with status {proc.returncode} while starting; its log ends "
                f"with: {_last_line(log)}",
                fix=f"see the last lines of {log}",
            )
        if time.monotonic() > deadline:
            raise UserError(
                f"{what} did not answer within the start timeout",
                fix=f"see the last lines of {log}; on a busy machine raise --timeout",
            )
        time.sleep(0.25)


def _check_port(port: int, what: str) -> int:
    """`port` (0: a free one) if we may listen on it on 127.0.0.1, else a UserError."""
    if not 0 <= port <= 65535:
        raise UserError(f"{what} port {port} is not a port number", fix="use 1-65535, or 0")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # as the servers bind: a port whose last connections linger in TIME_WAIT is free
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError as err:
            raise UserError(
                f"{what} port {port} on {HOST} is not free ({err.strerror or err})",
                fix="choose another with --port/--pg-port, or 0 for a free one",
            ) from None
        return int(sock.getsockname()[1])


def default_workers() -> int:
    """MLflow's 4 request workers on a big machine, 1 on a small one (under load, uvicorn's
    supervisor kills workers that miss its pings)."""
    return max(1, min(4, (os.cpu_count() or 1) // 2))


def _folder(path: Path, what: str) -> Path:
    path = path.expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise UserError(f"the {what} {path} is a file, not a folder", fix="name a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create the {what} {path} ({err.strerror})") from None
    return path


def _plan(root: Path, last: Server | None, options: dict[str, Any]) -> Server:
    """The server to start: each option, else the last start's setting, else the default
    (ports checked free, folders made)."""
    port, pg_port, artifacts, workers = (
        options.get(k) for k in ("port", "pg_port", "artifacts", "workers")
    )
    if workers is not None and workers < 1:
        raise UserError(f"--workers {workers}: at least 1", fix="use --workers 1 or more")
    port = port if port is not None else (last.port if last else DEFAULT_PORT)
    pg_port = pg_port if pg_port is not None else (last.pg_port if last else 0)
    art = Path(artifacts) if artifacts else Path(last.artifacts) if last else root / "artifacts"
    return Server(
        root=str(root),
        port=_check_port(port, "MLflow"),
        pg_port=_check_port(pg_port, "PostgreSQL"),
        artifacts=str(_folder(art, "artifacts folder")),
        workers=workers or (last.workers if last else default_workers()),
        pg_user=_pg_os_user(options.get("pg_user") or (last.pg_user if last else None)),
    )


def _check_unchanged(current: Server, options: dict[str, Any]) -> None:
    """Options given to `start` while the server runs must be what it runs with."""
    wanted = {
        "port": options.get("port") or current.port,
        "pg_port": options.get("pg_port") or current.pg_port,
        "artifacts": str(Path(options.get("artifacts") or current.artifacts).resolve()),
        "workers": options.get("workers") or current.workers,
    }
    changed = [k for k, v in wanted.items() if v != getattr(current, k)]
    if changed:
        raise UserError(
            f"the server in {current.root} already runs with other settings "
            f"({', '.join(f'{k} {getattr(current, k)}' for k in changed)})",
            fix="pipeline server stop first, then start it with the new ones",
        )


def start(
    root: Path = DEFAULT_DIR, *, timeout: float = START_TIMEOUT_S, **options: Any
) -> tuple[Server, bool]:
    """Start the server recorded in (or planned for) `root`; returns (server, started now).

    options: port (default 5000, or the last start's; 0: a free one), pg_port (default a free
    one, or the last start's), artifacts (default <root>/artifacts, or the last start's),
    workers (MLflow's request workers), pg_user (whom PostgreSQL runs as under root).
    A server that is already up is left as it is; one half up is stopped and started again.
    """
    if not timeout > 0:
        raise UserError(f"--timeout {timeout:g}: must be more than 0 seconds")
    root = _folder(root, "server folder")
    last = load(root)
    if last is not None:
        up = running(last)
        if all(up.values()):
            _check_unchanged(last, options)
            return last, False
        if any(up.values()):
            stop(last)
    server = _plan(root, last, options)
    pg_bin("postgres")  # installed? (before anything is made)
    try:
        init_postgres(server)
        deadline = time.monotonic() + timeout
        start_postgres(server, deadline)
        start_mlflow(server, deadline)
    except BaseException:
        stop(server)  # nothing left half started
        raise
    return server, True


def running(server: Server) -> dict[str, bool]:
    """Which of the two servers is up (MLflow: its processes run and /health answers)."""
    return {
        "postgres": _ours(server.postgres_pid, str(server.pgdata)),
        "mlflow": _ours(server.mlflow_pid, "mlflow") and healthy(server.uri),
    }


def has_processes(server: Server) -> bool:
    """Either server still has processes (up or not: what `stop` ends)."""
    return _ours(server.mlflow_pid, "mlflow") or _ours(server.postgres_pid, str(server.pgdata))


STEPS_MLFLOW = [(signal.SIGTERM, 10.0, True), (signal.SIGKILL, 5.0, True)]
# fast shutdown, then immediate; SIGKILL (to every process of the cluster) only as a last resort
STEPS_POSTGRES = [
    (signal.SIGINT, 20.0, False),
    (signal.SIGQUIT, 5.0, False),
    (signal.SIGKILL, 5.0, True),
]


def _end(pgid: int, steps: list[tuple[signal.Signals, float, bool]]) -> bool:
    """Send each step's signal (to the whole group or its leader) until the group is gone."""
    for sig, wait, whole_group in steps:
        try:
            os.killpg(pgid, sig) if whole_group else os.kill(pgid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:
            raise UserError(
                f"not allowed to stop process {pgid}", fix="run stop as the user who started it"
            ) from None
        if _wait_gone(pgid, wait):
            return True
    return False


def stop(server: Server) -> list[str]:
    """End the tracking server, then PostgreSQL, by their recorded process groups (checked to
    still be theirs); returns what is still running (empty: all ended)."""
    left = []
    mlflow_up = server.mlflow_pid and _ours(server.mlflow_pid, "mlflow")
    if mlflow_up and not _end(server.mlflow_pid or 0, STEPS_MLFLOW):
        left.append(f"MLflow (process group {server.mlflow_pid})")
    postgres_up = server.postgres_pid and _ours(server.postgres_pid, str(server.pgdata))
    if postgres_up and not _end(server.postgres_pid or 0, STEPS_POSTGRES):
        left.append(f"PostgreSQL (process {server.postgres_pid})")
    if not left:
        server.mlflow_pid = server.postgres_pid = None
    if (Path(server.root) / STATE_FILE).is_file() or left:
        _save(server)
    return left


def describe(server: Server) -> str:
    """One line: where the tracking server, its database and its artifacts are."""
    return (
        f"MLflow {server.uri} (process group {server.mlflow_pid}, {server.workers} worker(s), "
        f"log {server.log('mlflow')}); PostgreSQL {HOST}:{server.pg_port} (process "
        f"{server.postgres_pid}, data {server.pgdata}); artifacts {server.artifacts}"
    )
