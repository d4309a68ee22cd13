"""A tracking server lost mid-run: keep training, buffer what MLflow should get, replay it.

MLflow's own HTTP client retries a failed request for about four minutes before it raises, and
a Tune callback that raises ends the sweep. So while a run reports to an http(s) tracking
server, the driver asks MLflow to fail fast (`fail_fast`: two quick retries, a 20 s timeout,
unless the user set those variables) and sends every tracking write through a `Buffer`:

- a write that fails because the server cannot be reached (`is_outage`: connection refused or
  reset, timeouts, 5xx after retries) is kept, in order, with every write after it; training
  goes on and one line says so;
- the buffer retries with exponential backoff (1 s doubling to 60 s) at each new event and
  replays what it holds, oldest first, when the server answers again; one line says so;
- at the end of the run `drain` waits, with the same backoff, until the server answers or the
  outage has lasted `mlflow.retry_for_s` seconds; only then does the run fail, with one line
  naming the server and what to run when it is back.

Nothing is lost or doubled by a replay: an epoch's metrics keep the timestamp of their first
attempt (MLflow ignores an identical metric row written twice, e.g. when the server committed a
write whose answer was lost), an epoch a run already holds is skipped (`tracking.backfill`), and
every epoch that reached a checkpoint is also on disk, from where a sweep's end (and
`pipeline tune --resume`, if the driver dies while the server is down) logs any epoch its run
lacks. Errors that are not outages (a bad parameter, a deleted run) raise at once, as before.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from pipeline.errors import UserError
from pipeline.ui import info

FIRST_DELAY_S = 1.0
MAX_DELAY_S = 60.0
# MLflow's client retries (its defaults: 7 retries over ~4 minutes, 120 s timeout): few and short,
# so that the buffer, not a blocked callback, rides out an outage.
FAIL_FAST_ENV = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
}


def fail_fast(uri: str) -> None:
    """For an http(s) store: MLflow's client gives up within seconds (the variables a user has
    set are kept)."""
    if uri.startswith(("http://", "https://")):
        for key, value in FAIL_FAST_ENV.items():
            os.environ.setdefault(key, value)


def is_outage(err: BaseException) -> bool:
    """The server could not be reached (or kept answering 5xx): a write worth retrying later.
    MLflow wraps the `requests` error in an MlflowException, so the chain is searched."""
    import requests

    transient = (
        requests.exceptions.ConnectionError,
        requests.exceptions.Timeout,
        requests.exceptions.RetryError,
        ConnectionError,
        TimeoutError,
    )
    seen: set[int] = set()
    e: BaseException | None = err
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, transient):
            return True
        code = getattr(e, "error_code", "")
        if code in ("TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED"):
            return True
        e = e.__cause__ or e.__context__
    return False


class Buffer:
    """Tracking writes in order, kept and replayed across an outage of the tracking server."""

    def __init__(
        self,
        uri: str,
        retry_for_s: float,
        *,
        next_step: str = "run the same command again",
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.uri, self.retry_for_s, self.next_step = uri, retry_for_s, next_step
        self.clock, self.sleep = clock, sleep
        self.pending: deque[tuple[str, Callable[[], Any]]] = deque()
        self.down_since: float | None = None  # clock time of the first failed write
        self.delay = FIRST_DELAY_S
        self.next_try = 0.0
        self.replayed = 0  # writes sent after an outage, in all

    @property
    def down(self) -> bool:
        return self.down_since is not None

    def submit(self, what: str, write: Callable[[], Any]) -> tuple[bool, Any]:
        """Queue `write` (described by `what`) and send what the server can take now; returns
        (sent, the write's result): (False, None) while the server is down."""
        self.pending.append((what, write))
        last = self.flush()
        return (True, last) if not self.pending else (False, None)

    def flush(self) -> Any:
        """Send the queued writes, oldest first, unless a retry is not due yet; stops at the
        first outage (kept for the next try). Returns the last sent write's result."""
        if not self.pending or (self.down and self.clock() < self.next_try):
            return None
        result, sent = None, 0
        while self.pending:
            what, write = self.pending[0]
            try:
                result = write()
            except Exception as err:
                if not is_outage(err):
                    raise
                self._failed(what, err)
                return None
            self.pending.popleft()
            sent += 1
        if self.down:
            self._back(sent)
        return result

    def _failed(self, what: str, err: BaseException) -> None:
        now = self.clock()
        if self.down_since is None:
            self.down_since = now
            info(
                f"[yellow]MLflow server {self.uri} unreachable[/] ({what}: {_reason(err)}); "
                f"training goes on, tracking writes are kept and replayed when it answers "
                f"(retrying for up to {self.retry_for_s:g} s)"
            )
        else:
            self.delay = min(self.delay * 2, MAX_DELAY_S)
        self.next_try = now + self.delay

    def _back(self, sent: int) -> None:
        lasted = self.clock() - (self.down_since or 0.0)
        info(f"MLflow server {self.uri} is back after {lasted:.0f} s: {sent} write(s) replayed")
        self.replayed += sent
        self.down_since, self.delay = None, FIRST_DELAY_S

    def gave_up(self) -> bool:
        return self.down_since is not None and self.clock() - self.down_since >= self.retry_for_s

    def drain(self) -> None:
        """Wait (with backoff) until every queued write is sent; a UserError once the outage has
        lasted `retry_for_s` seconds."""
        while self.pending:
            self.flush()
            if not self.pending:
                return
            if self.gave_up():
                raise UserError(
                    f"the MLflow server {self.uri} has been unreachable for "
                    f"{self.clock() - (self.down_since or 0.0):.0f} s "
                    f"({len(self.pending)} tracking write(s) not sent; checkpoints are kept)",
                    fix=f"once the server is back, {self.next_step}; or raise "
                    "mlflow.retry_for_s to wait longer",
                )
            self.sleep(max(0.0, min(self.next_try, self._deadline()) - self.clock()))

    def _deadline(self) -> float:
        return (self.down_since or self.clock()) + self.retry_for_s


def _reason(err: BaseException) -> str:
    """The innermost message of an outage error, on one line and short."""
    while err.__cause__ or err.__context__:
        err = err.__cause__ or err.__context__  # type: ignore[assignment]
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 160 else text[:157] + "..."
