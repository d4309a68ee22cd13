"""Ray: start or join a cluster, size the work to it, keep the terminal quiet.

Local by default (`ray.init` with `ray.num_cpus`, always with token authentication: Ray's
processes listen on the machine's network address whatever the node IP); an existing cluster
with `ray.address` or env `RAY_ADDRESS` (reachability and token checked in seconds, then its
size printed). On a cluster of several nodes the storage path must be shared
(`check_shared_storage`). Environment variables that Ray Train reads in its controller and
workers travel in the job's runtime env; `placement_callback` records where the workers ran.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from pipeline.config import STORAGE_SCHEMES, Config, from_env, project_root
from pipeline.errors import UserError
from pipeline.ui import info

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
    nodes: int = 1  # alive nodes
    address: str | None = None  # the existing cluster joined; None: our own local cluster

    def describe(self) -> str:
        where = f"the cluster at {self.address}" if self.address else "a local cluster"
        return f"Ray: {where}, {self.nodes} node(s), {self.cpus:g} CPUs, {self.gpus:g} GPUs"


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
TOKEN_FIX = (
    "give this machine the cluster's token: env RAY_AUTH_TOKEN, a file named by "
    "RAY_AUTH_TOKEN_PATH, or ~/.ray/auth_token (`ray get-auth-token` on the head node prints it)"
)


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


def token_configured() -> bool:
    """This machine has a Ray token where Ray looks for one (env, token file, default file)."""
    env = os.environ
    return bool(env.get("RAY_AUTH_TOKEN") or env.get("RAY_AUTH_TOKEN_PATH")) or (
        AUTH_TOKEN_FILE.is_file()
    )


def _auth_env(address: str | None) -> None:
    """Joining a cluster by explicit address: Ray turns token authentication on by itself only
    for `auto`, so use the token mode whenever a token is configured (RAY_AUTH_TOKEN,
    RAY_AUTH_TOKEN_PATH, or the file `ray start` and every local `ray.init` write:
    ~/.ray/auth_token)."""
    explicit = bool(address) and address != "auto" and "RAY_AUTH_MODE" not in os.environ
    if explicit and token_configured():
        os.environ["RAY_AUTH_MODE"] = "token"
        raylet = sys.modules.get("ray._raylet")
        if raylet is not None:  # Ray has read its config already: refresh it, as Ray does
            raylet.Config.initialize("")


def _local_auth_env() -> None:
    """A cluster of our own always uses token authentication (its processes listen on the
    machine's network address). Ray turns it on for a new local cluster unless RAY_AUTH_MODE
    says otherwise, so any other inherited value is dropped, with a note."""
    mode = os.environ.get("RAY_AUTH_MODE")
    if mode is not None and mode.lower() != "token":
        del os.environ["RAY_AUTH_MODE"]
        info(f"RAY_AUTH_MODE={mode} ignored: the pipeline's own Ray cluster always uses tokens")


@contextmanager
def _quiet_stderr() -> Iterator[None]:
    """File descriptor 2 to /dev/null (Ray's C++ client logs each retry there), restored after."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def check_token(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """The Ray cluster (GCS) at an explicit `host:port` accepts this machine's token, or needs
    none: one request with a timeout, where ray.init retries a refused token for 20 s and logs
    every try. Uses Ray's own GCS client; skipped where this Ray has none."""
    if address == "auto" or "://" in address:
        return
    try:
        from ray._raylet import InnerGcsClient  # type: ignore[attr-defined]
        from ray.exceptions import AuthenticationError, RpcError
    except ImportError:
        return
    connect = getattr(InnerGcsClient, "standalone", None)
    if connect is None:
        return
    try:
        with _quiet_stderr():
            connect(address, None, int(timeout * 1000))
    except AuthenticationError:
        has = "refused this machine's token" if token_configured() else "needs a token"
        raise UserError(f"the Ray cluster at {address} {has}", fix=TOKEN_FIX) from None
    except RpcError as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise UserError(
            f"no Ray cluster answers at ray.address {address} ({first[:200]})",
            fix="ray.address is the head node's GCS address (`ray start --head --port=PORT`, "
            "default 6379), not its dashboard's or client server's",
        ) from None


def _init_kwargs(cfg: Config, address: str | None, env: dict, verbose: bool, drivers: int) -> dict:
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
        if drivers:
            kwargs["resources"] = {TRIAL_DRIVER: drivers}
    return kwargs


def init(cfg: Config, *, verbose: bool = False, trial_drivers: int = 0) -> Cluster:
    """ray.init (local or existing cluster); a local cluster gets `trial_drivers` tokens.

    `ray.address` null (and no RAY_ADDRESS) always starts a cluster of our own
    (`address="local"`, token authentication on), even when another local cluster is running:
    joining it by accident would share its CPUs and refuse our `trial_driver` resources. The
    dashboard process runs (bound to 127.0.0.1): Ray Train's placement-group cleaner needs its
    State API, without which stopped trials leak their workers' CPUs. Joining an existing
    cluster: `Cluster.address` says which (and `describe()` its size).
    """
    env = prepare_env(cfg, verbose)
    address = from_env("ray.address", cfg.ray.address)
    if address:
        check_address(address)
        _auth_env(address)
        check_token(address)
    else:
        _local_auth_env()
    import ray

    if not verbose:
        logging.getLogger("ray").setLevel(logging.ERROR)
    try:
        ray.init(**_init_kwargs(cfg, address, env, verbose, trial_drivers))
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
        nodes=sum(1 for node in ray.nodes() if node.get("Alive")),
        address=address,
    )


# Remote filesystems every node reaches by URI, and mount types of network filesystems.
SHARED_SCHEMES: Final = tuple(s for s in STORAGE_SCHEMES if s not in ("file", "local"))
NETWORK_FILESYSTEMS: Final = frozenset(
    {"nfs", "nfs4", "cifs", "smb3", "smbfs", "ceph", "glusterfs", "lustre", "gpfs", "beegfs",
     "wekafs", "fuse.gcsfuse", "fuse.s3fs", "fuse.juicefs", "fuse.ceph-fuse",
     "fuse.glusterfs", "fuse.mountpoint-s3", "fuse.goofys", "fuse.blobfuse2"}
)  # fmt: skip


def mount_type(path: Path, mounts: str | None = None) -> str | None:
    """The type of the filesystem holding `path`: that of the longest mount point above it in
    `mounts` (default: /proc/self/mounts; later mounts shadow earlier ones); None where that is
    unknown."""
    if mounts is None:
        try:
            mounts = Path("/proc/self/mounts").read_text()
        except OSError:
            return None
    target = os.path.realpath(path)
    best, kind = "", None
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, fields[2]
    return kind


def check_shared_storage(cfg: Config, cluster: Cluster) -> None:
    """On a cluster of several nodes, every node writes checkpoints to ray.storage_path: a
    folder on this machine's own disk is refused before any training (Ray would fail only at
    the first checkpoint from another node). Shared: a bucket URI (s3://, gs://, ...), a
    folder on a network filesystem (NFS, CIFS, Lustre, ...: its mount type), or any folder
    with `ray.shared_storage: true` (the user's word that every node mounts it there)."""
    if cluster.nodes < 2 or cfg.ray.shared_storage:
        return
    root = storage_root(cfg)
    scheme = root.split("://", 1)[0].lower() if "://" in root else None
    if scheme in SHARED_SCHEMES:
        return
    folder = root.split("://", 1)[1] if scheme else root
    kind = mount_type(Path(folder))
    if kind in NETWORK_FILESYSTEMS:
        return
    raise UserError(
        f"ray.storage_path {folder} is on this machine's own disk ({kind or 'local'}), but the "
        f"Ray cluster has {cluster.nodes} nodes: checkpoints from workers on other nodes would "
        "not arrive here",
        fix="use storage every node sees at the same path: a bucket (--set "
        "ray.storage_path=s3://bucket/runs, or gs://...) or a shared folder (NFS) with --set "
        "ray.shared_storage=true",
    )


WORKER_NODES = "worker_nodes"  # key of the record a placement callback puts in its sink


def placement_line(nodes: list[str]) -> str:
    """`nodes` (node ids in rank order) as 'workers on 2 node(s): rank 0 on 9c902869, ...'."""
    ranks = ", ".join(f"rank {rank} on {node[:8]}" for rank, node in enumerate(nodes))
    return f"workers on {len(set(nodes))} node(s): {ranks}"


def placement_callback(sink: Any = None, groups_file: str | None = None) -> Any:
    """A Ray Train callback, run in the Train controller, that records on which node each rank
    runs whenever the worker group (re)starts: `{WORKER_NODES: [node id per rank]}` put into
    `sink` (a `ray.util.queue.Queue`), or `placement_line` printed when `sink` is None (into
    the controller's log on the cluster, which Ray forwards to the driver's terminal unless the
    controller exits first). With `groups_file` it also appends the worker group's placement
    group id there (see `remove_worker_groups`). It hooks Ray Train's worker-group events, which
    are internal: None where this Ray has no such hook."""
    try:
        from ray.train.v2._internal.execution.callback import WorkerGroupCallback
    except ImportError:
        return None

    class _Placement(WorkerGroupCallback):
        def after_worker_group_start(self, worker_group: Any) -> None:
            try:
                nodes = [w.metadata.node_id for w in worker_group.get_workers()]
            except Exception:  # internal structure changed: record nothing, train on
                return
            if groups_file:
                _record_group(worker_group, groups_file)
            if sink is None:
                print(placement_line(nodes), flush=True)
            else:
                sink.put({WORKER_NODES: nodes})

    return _Placement()


def _record_group(worker_group: Any, groups_file: str) -> None:
    try:
        pg = worker_group.get_worker_group_state().placement_group_handle.placement_group
        Path(groups_file).parent.mkdir(parents=True, exist_ok=True)
        with open(groups_file, "a") as f:
            f.write(pg.id.hex() + "\n")
    except Exception:  # internal structure changed or storage not local: record nothing
        return


def _group(hex_id: str) -> Any:
    """The placement group with this hex id (as Ray's state API and the groups files write it)."""
    import ray
    from ray.util.placement_group import PlacementGroup

    return PlacementGroup(ray.PlacementGroupID(bytes.fromhex(hex_id)))


def remove_worker_groups(groups_file: str) -> int:
    """Remove the placement groups a finished trial's worker groups used that are still held.

    Ray Train 2.60 creates them in its controller actor, so they live as long as the job, and
    relies on a per-controller cleaner to remove them; an ASHA-stopped trial whose controller
    dies while aborting (it stops that cleaner before removing the group) leaves its group
    CREATED, holding CPUs nobody uses, until new trials cannot start. Returns how many."""
    import ray
    from ray.util.placement_group import remove_placement_group

    path = Path(groups_file)
    if not path.is_file():
        return 0
    removed = 0
    for line in set(path.read_text().split()):
        try:
            pg = _group(line)
            if ray.util.placement_group_table(pg).get("state") in ("CREATED", "PENDING"):
                remove_placement_group(pg)
                removed += 1
        except Exception:  # already gone, or not an id: nothing to free
            continue
    return removed


def free_orphan_groups(first_seen: dict[str, float], grace_s: float) -> int | None:
    """Remove this job's worker placement groups that hold resources with no live actor in them
    (CREATED, resource bundles, no trial-driver token) for at least `grace_s`, as seen by this
    and earlier calls (`first_seen` carries the first sighting between calls). These are groups
    no trial will use: one made for a worker group whose start was abandoned leaves no id to
    record (`remove_worker_groups`), yet holds its CPUs. Other jobs' groups are never touched.
    Reads Ray's state API (the dashboard, 5 s timeouts). Returns how many were removed, None
    when the state API did not answer."""
    from ray.util.placement_group import remove_placement_group
    from ray.util.state import list_actors

    now, removed, held = time.monotonic(), 0, set()
    try:
        for g in _worker_groups():
            held.add(g.placement_group_id)
            in_group = ("placement_group_id", "=", g.placement_group_id)
            if list_actors(filters=[in_group, ("state", "!=", "DEAD")], **STATE_API):
                first_seen.pop(g.placement_group_id, None)
            elif now - first_seen.setdefault(g.placement_group_id, now) >= grace_s:
                remove_placement_group(_group(g.placement_group_id))
                del first_seen[g.placement_group_id]
                removed += 1
    except Exception:  # no state API (no dashboard), or it timed out
        return removed or None
    for gone in set(first_seen) - held:
        del first_seen[gone]
    return removed


STATE_API: Any = {"detail": True, "timeout": 5, "raise_on_missing_output": False}


def _worker_groups(created_only: bool = True) -> list:
    """This job's CREATED (else: not yet removed, pending ones included) placement groups that
    hold resources for workers: unnamed, and not a trial driver's token group (Ray's state API;
    raises when it does not answer)."""
    import ray
    from ray.util.state import list_placement_groups

    job = ray.get_runtime_context().get_job_id()
    state = ("state", "=", "CREATED") if created_only else ("state", "!=", "REMOVED")
    groups = list_placement_groups(filters=[state], **STATE_API)
    return [
        g
        for g in groups
        if g.creator_job_id == job
        and not g.name
        and not any(TRIAL_DRIVER in (b.get("unit_resources") or {}) for b in g.bundles or [])
    ]


TRAIN_ACTORS = ("TrainController", "RayTrainWorker")  # Ray Train 2.60's actor classes


def live_train_actors() -> int | None:
    """How many of this job's Ray Train controllers and workers are not dead yet; None when
    the state API does not answer."""
    import ray
    from ray.util.state import list_actors

    job = ray.get_runtime_context().get_job_id()
    try:  # filtered by the state API
        actors = list_actors(filters=[("state", "!=", "DEAD"), ("job_id", "=", job)], **STATE_API)
    except Exception:  # no state API (no dashboard), or it timed out
        return None
    return sum(a.class_name in TRAIN_ACTORS for a in actors)


def free_all_worker_groups() -> int | None:
    """Remove every worker placement group of this job that is not removed yet, whatever runs
    in it: only right for a sweep that has ended, when no trial uses one. Pending ones too: a
    group a dying Train controller asked for while others held the CPUs turns CREATED once they
    are freed, and holds its CPUs until the job ends. Returns how many; None when the state API
    does not answer."""
    from ray.util.placement_group import remove_placement_group

    try:
        groups = _worker_groups(created_only=False)
    except Exception:  # no state API (no dashboard), or it timed out
        return None
    removed = 0
    for g in groups:
        try:
            remove_placement_group(_group(g.placement_group_id))
            removed += 1
        except Exception:  # gone meanwhile: nothing to free
            continue
    return removed


GROUPS_DIR = ".worker_groups"  # under a sweep's train runs: one file of group ids per trial


def groups_file(runs_root: str, trial_id: str) -> str | None:
    """Where a trial's worker placement-group ids are recorded (None for bucket storage)."""
    return None if "://" in runs_root else f"{runs_root}/{GROUPS_DIR}/{trial_id}"


ORPHAN_CHECK_S = 10.0  # the janitor looks for orphan groups this often, and frees one seen so
# for this long (a live worker group has its actors within a second or two of being placed)


END_SETTLE_S = 60.0  # at a sweep's end, how long the janitor waits for ended trials' groups


def janitor_callback(runs_root: str) -> Any:
    """A Tune callback that frees CPUs nobody uses, so that a sweep never waits on them: before
    each trial starts, the worker placement groups still held by trials that already ended
    (`remove_worker_groups`); every ORPHAN_CHECK_S while it runs, this job's groups with no
    live actor (`free_orphan_groups`); when it ends, all of this job's worker groups
    (`free_all_worker_groups`), until no Train actor of the job lives."""
    from ray.tune import Callback

    class FreeEndedTrialsGroups(Callback):
        def __init__(self) -> None:
            self.ended: set[str] = set()
            self.first_seen: dict[str, float] = {}
            self.last_check = time.monotonic()
            self.unanswered = 0

        def on_step_begin(self, iteration: int, trials: list, **_: Any) -> None:
            due = time.monotonic() - self.last_check >= ORPHAN_CHECK_S
            if due and self.unanswered < 3:  # no state API here: stop asking (5 s each time)
                self.free_orphans(ORPHAN_CHECK_S)

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **_: Any) -> None:
            self.ended.add(trial.trial_id)

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **_: Any) -> None:
            self.ended.add(trial.trial_id)

        def on_trial_start(self, iteration: int, trials: list, trial: Any, **_: Any) -> None:
            self.free()

        def on_experiment_end(self, trials: list, **_: Any) -> None:
            """Trials stopped at the end may still be tearing their worker groups down, and a
            Train controller that sees its workers die first may ask for a new group before it
            dies itself (CI found one CREATED after a sweep, its worker dead): no trial runs
            now, so remove every worker group of this job, again each second, until two rounds
            in a row find no controller or worker of the job alive and no group to remove (the
            state API lags), for at most END_SETTLE_S. With no state API (unanswered while
            the sweep ran, or in 2 rounds here) only the recorded groups are freed."""
            deadline = time.monotonic() + END_SETTLE_S
            clean = unanswered = 0
            while True:
                self.free()
                if self.unanswered >= 3:  # no state API here: nothing more to learn
                    return
                alive = live_train_actors()  # first: a group they asked for shows next
                freed = None if alive is None else free_all_worker_groups()
                if alive is None or freed is None:
                    unanswered += 1
                    clean = 0
                else:  # removal is synchronous: a round that freed nothing found nothing
                    clean = clean + 1 if alive == freed == 0 else 0
                    if freed:
                        info(f"freed {freed} placement group(s) left by ended trials")
                if clean >= 2 or unanswered >= 2 or time.monotonic() >= deadline:
                    return
                time.sleep(1.0)

        def free_orphans(self, grace_s: float) -> None:
            n = free_orphan_groups(self.first_seen, grace_s)
            self.last_check = time.monotonic()
            self.unanswered = self.unanswered + 1 if n is None else 0
            if n:
                info(f"freed {n} placement group(s) that no trial was using")

        def free(self) -> None:
            for tid in sorted(self.ended):
                path = groups_file(runs_root, tid)
                if path and (n := remove_worker_groups(path)):
                    info(f"freed {n} placement group(s) left by ended trial {tid}")

    return FreeEndedTrialsGroups()


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
