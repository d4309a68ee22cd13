"""Ray: start or join a cluster, size the work to it, keep the terminal quiet.

Local by default (`ray.init` with `ray.num_cpus`, services on 127.0.0.1, no dashboard); an
existing cluster with `ray.address` or env `RAY_ADDRESS`. Environment variables that Ray Train
reads in its controller and workers travel in the job's runtime env.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from pipeline.config import Config, from_env
from pipeline.errors import UserError
from pipeline.tracking import project_root

TRIAL_DRIVER = "trial_driver"  # token resource: one per concurrent Tune trial driver
# Lines that Ray prints whatever the log level; hidden unless --verbose.
_NOISE = (
    r"Reporting training result|Checkpoint successfully created|Setting up process group"
    r"|Ray Train controller actor .* is dead"  # ASHA-stopped trial: its cleanup is routine
    # The crash dump of a worker that Tune kills mid-step when ASHA stops its trial (expected;
    # the trial's outcome is in the trials table). --verbose shows everything.
    r"|SIGABRT|logging\.cc:|Fatal Python error|Stack \(most recent call first\)|Extension modules:"
    r"|PC: @|^\s+@\s|\.so(\.\d+)*\(|Traceback \(most recent call last\)|^\s+\S|^\s*$"
    r"|Graceful shutdown of backend failed|ActorDiedError|The actor (is dead|died unexpectedly)"
)


@dataclass(frozen=True)
class Cluster:
    cpus: float
    gpus: float
    trial_driver_slots: float  # 0 when the cluster has no `trial_driver` resource


def job_env(cfg: Config, verbose: bool) -> dict[str, str]:
    """Env vars for the Ray job (driver, Train controller, workers)."""
    env = {
        "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": str(cfg.ray.health_check_interval_s),
        "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
    }
    if not verbose:
        env["RAY_TRAIN_ENABLE_PRINT_PATCH"] = "0"
        env["RAY_DEDUP_LOGS_SKIP_REGEX"] = _NOISE
        env["RAY_AIR_NEW_OUTPUT"] = "0"  # Tune's legacy reporter at verbose=0 prints nothing
    return env


def use_gpu(cfg: Config, cluster: Cluster) -> bool:
    return cfg.train.use_gpu == "on" or (cfg.train.use_gpu == "auto" and cluster.gpus > 0)


def prepare_env(cfg: Config, verbose: bool) -> dict[str, str]:
    """Put the job env vars into this process; call BEFORE importing ray (some are read at
    import time, e.g. the log-dedup skip regex)."""
    env = job_env(cfg, verbose)
    os.environ.update(env)
    if not verbose:
        logging.getLogger("mlflow").setLevel(logging.WARNING)
    return env


CONNECT_TIMEOUT_S = 5.0
AUTH_TOKEN_FILE = Path.home() / ".ray" / "auth_token"


def check_address(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """An explicit `host:port` must accept a TCP connection within `timeout` seconds (Ray's own
    client retries for ever); `auto` and `ray://` addresses are left to Ray."""
    if address == "auto" or "://" in address or ":" not in address:
        return
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return
    except (OSError, ValueError) as err:
        problem = str(err) or type(err).__name__
    raise UserError(
        f"no Ray cluster answers at ray.address {address} ({problem})",
        fix="start it (`ray start --head ...`) or correct ray.address / RAY_ADDRESS; leave "
        "both unset to start a local cluster",
    )


def _auth_env(address: str | None) -> None:
    """Joining a cluster by explicit address: Ray turns token authentication on by itself only
    for `auto`, so use the token mode whenever a token is configured (RAY_AUTH_TOKEN, or the
    file `ray start` and every local `ray.init` write: ~/.ray/auth_token)."""
    explicit = bool(address) and address != "auto" and "RAY_AUTH_MODE" not in os.environ
    if explicit and (os.environ.get("RAY_AUTH_TOKEN") or AUTH_TOKEN_FILE.is_file()):
        os.environ["RAY_AUTH_MODE"] = "token"


def init(cfg: Config, *, verbose: bool = False, trial_drivers: int = 0) -> Cluster:
    """ray.init (local or existing cluster); a local cluster gets `trial_drivers` tokens.

    `ray.address` null (and no RAY_ADDRESS) always starts a cluster of our own
    (`address="local"`), even when another local cluster is running: joining it by accident
    would share its CPUs and refuse our `trial_driver` resources. The dashboard process runs
    (bound to 127.0.0.1): Ray Train's placement-group cleaner needs its State API, without
    which stopped trials leak their workers' CPUs.
    """
    env = prepare_env(cfg, verbose)
    address = from_env("ray.address", cfg.ray.address)
    if address:
        check_address(address)
        _auth_env(address)
    import ray

    kwargs: dict = {
        "logging_level": logging.INFO if verbose else logging.ERROR,
        "log_to_driver": True,
        "runtime_env": {"env_vars": env},
        "include_dashboard": True,
        "dashboard_host": "127.0.0.1",
        "ignore_reinit_error": True,
    }
    if address:
        kwargs["address"] = address
    else:
        kwargs["address"] = "local"
        kwargs["num_cpus"] = cfg.ray.num_cpus
        if trial_drivers:
            kwargs["resources"] = {TRIAL_DRIVER: trial_drivers}
    if not verbose:
        logging.getLogger("ray").setLevel(logging.ERROR)
    try:
        ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise UserError(
            f"cannot join the Ray cluster at {address or 'a new local cluster'} ({first[:200]})",
            fix="check ray.address / RAY_ADDRESS and, for a token-authenticated cluster, that "
            "this machine has its token (RAY_AUTH_TOKEN or ~/.ray/auth_token)",
        ) from None
    res = ray.cluster_resources()
    return Cluster(
        cpus=res.get("CPU", 0.0),
        gpus=res.get("GPU", 0.0),
        trial_driver_slots=res.get(TRIAL_DRIVER, 0.0),
    )


def planned_cpus(cfg: Config) -> int:
    """CPUs a local cluster will have (before ray.init)."""
    return cfg.ray.num_cpus or os.cpu_count() or 1


def trials_that_fit(cfg: Config, cpus: float, gpus: float, gpu: bool) -> int:
    """Concurrent trials whose worker groups fit the cluster at once (at least 1)."""
    if cfg.tune.max_concurrent_trials:
        return cfg.tune.max_concurrent_trials
    per_trial = cfg.train.num_workers * (1 if gpu else cfg.train.threads_per_worker)
    have = gpus if gpu else cpus
    return max(1, int(have // per_trial))


def storage_root(cfg: Config) -> str:
    """Absolute storage path for Train/Tune results (workers chdir into trial dirs)."""
    path = cfg.ray.storage_path
    if path and "://" in path:
        return path
    return str((project_root() / (path or "ray_results")).resolve())


def shutdown() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()
