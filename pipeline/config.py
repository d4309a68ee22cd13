"""params.yaml -> one frozen, validated config tree.

Every default lives here; params.yaml repeats them with a comment per key. Unknown keys, wrong
types and out-of-range values are rejected before any work starts, with the key's path in the
message. `load_config(path, overrides)` is the only reader of params.yaml in the project.

Environment variables: one rule for all of them, `from_env` below. A key set in params.yaml (or
by --set / -S) wins; the variable fills a key left null: `ray.address` <- RAY_ADDRESS,
`mlflow.tracking_uri` <- MLFLOW_TRACKING_URI, `data.mirror` <- SEQ2SEQ_DATA_MIRROR.
"""

from __future__ import annotations

import copy
import itertools
import math
import os
import re
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.errors import UserError
from seq2seq import defaults

ENV_FALLBACKS = {
    "ray.address": "RAY_ADDRESS",
    "mlflow.tracking_uri": "MLFLOW_TRACKING_URI",
    "data.mirror": "SEQ2SEQ_DATA_MIRROR",
}


def from_env(key: str, value: str | None, env: Mapping[str, str] | None = None) -> str | None:
    """The value of config `key`: its own when set, else its environment variable's (if any).

    A value taken from the environment is checked like the key's own (params values were
    checked when the config was loaded): a bad one is a UserError naming the variable."""
    env = os.environ if env is None else env
    if value:
        return value
    var = ENV_FALLBACKS[key]
    found = env.get(var) or None
    check = _ENV_CHECKS.get(key)
    if found and check:
        try:
            check(found)
        except ValueError as err:
            raise UserError(
                f"environment variable {var}={found!r}: {err}",
                fix=f"correct or unset {var} (or set {key} in params.yaml)",
            ) from None
    return found


# --------------------------------------------------------------------------------- URI schemes
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
# MLflow's tracking stores (mlflow.tracking._tracking_service.utils); database schemes also
# take a driver: postgresql+psycopg2://...
MLFLOW_SCHEMES: Final = ("file", "sqlite", "http", "https", "databricks", "databricks-uc")
MLFLOW_DB_SCHEMES: Final = ("sqlite", "postgresql", "mysql", "mssql")
# Filesystems pyarrow.fs.FileSystem.from_uri knows (Ray Train/Tune storage). Decided from this
# list, never by calling pyarrow: for s3:// it may resolve the bucket's region over the network.
STORAGE_SCHEMES: Final = ("file", "local", "s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss")


def project_root(cwd: str | Path | None = None) -> Path:
    """The project root: `cwd`, or the outer project when `cwd` is a `dvc exp run --temp` copy."""
    here = Path(cwd if cwd is not None else os.getcwd()).resolve()
    for p in (here, *here.parents):
        # <root>/.dvc/tmp/exps/<tmpdir>/...: p is the `exps` folder.
        if p.name == "exps" and p.parent.name == "tmp" and p.parent.parent.name == ".dvc":
            return p.parent.parent.parent
    return here


def uri_scheme(value: str) -> str | None:
    """`s3://b/x` -> 's3'; None for a plain path (a one-letter scheme is a Windows drive)."""
    m = _SCHEME.match(value)
    return m.group(1).lower() if m and len(m.group(1)) > 1 else None


def check_tracking_uri(uri: str) -> str:
    """`uri` if MLflow has a store for its scheme (or it is a path), else ValueError."""
    scheme = uri_scheme(uri)
    if scheme is None or scheme in MLFLOW_SCHEMES:
        return uri
    base, plus, _driver = scheme.partition("+")
    if base in MLFLOW_DB_SCHEMES and (plus or scheme == base):
        return uri
    raise ValueError(
        f"MLflow has no tracking store for the scheme {scheme!r}; use a local path, "
        "file:/path, sqlite:///file.db, http(s)://host:port, databricks, or "
        "postgresql|mysql|mssql[+driver]://user@host/db"
    )


def check_storage_uri(path: str) -> str:
    """`path` if it is a local path or a URI whose scheme pyarrow's filesystems know, else
    ValueError. No filesystem or network access (see `check_storage_root` for that)."""
    if "://" not in path:  # what Ray and raycluster.storage_root treat as a local path
        return path
    scheme = path.split("://", 1)[0].lower()
    if scheme not in STORAGE_SCHEMES:
        raise ValueError(
            f"no filesystem for the scheme {scheme!r}; use a local or shared "
            f"folder (e.g. /mnt/shared/ray_results), or a URI with one of the schemes "
            f"{', '.join(s + '://' for s in STORAGE_SCHEMES)}"
        )
    return path


def check_storage_root(root: str) -> None:
    """Train/Tune storage (e.g. `raycluster.storage_root(cfg)`): a local folder (a path or a
    file:// / local:// URI) is created if needed and must be writable; any other URI is left
    to Ray (no network here). Raises UserError naming ray.storage_path. Call it before Ray
    starts."""
    scheme = root.split("://", 1)[0].lower() if "://" in root else None
    if scheme not in (None, "file", "local"):
        return
    folder = Path(root.split("://", 1)[1] if scheme else root)
    fix = "set ray.storage_path to a folder you can write to (or fix its permissions)"
    if folder.exists() and not folder.is_dir():
        raise UserError(f"ray.storage_path: {folder} exists and is not a folder", fix=fix)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise UserError(f"ray.storage_path: cannot write to {folder} ({reason})", fix=fix) from None


_ENV_CHECKS: dict[str, Callable[[str], str]] = {"mlflow.tracking_uri": check_tracking_uri}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


# ----------------------------------------------------------------------------------------- data
class SampleCorpus(_Section):
    num_pairs: int = Field(24_000, ge=10, description="pairs to generate (all splits)")
    seed: int = Field(1234, description="generator seed: same seed, same corpus")
    valid_fraction: float = Field(0.05, gt=0, lt=0.5)
    test_fraction: float = Field(0.05, gt=0, lt=0.5)
    vocabulary: Literal["small", "full"] = Field(
        "small", description="small: a few words per class (learnt in minutes); full: all"
    )
    chain: float = Field(0.15, ge=0.0, lt=1.0, description="chance of chaining one more clause")


class TatoebaCorpus(_Section):
    path: str | None = Field(None, description="deu.txt / deu-eng.zip: local path or URL")
    valid_fraction: float = Field(0.05, gt=0, lt=0.5)
    test_fraction: float = Field(0.05, gt=0, lt=0.5)
    seed: int = 1234


class FilesCorpus(_Section):
    format: Literal["text", "tsv", "csv"] = "text"
    # text: a path pattern with {lang}, e.g. corpus/train.{lang}; tsv/csv: a table per split.
    train: str | None = None
    valid: str | None = None
    test: str | None = None
    source_column: str | None = None  # tsv/csv: defaults to data.source_lang
    target_column: str | None = None  # tsv/csv: defaults to data.target_lang


class DataConfig(_Section):
    corpus: Literal["sample", "multi30k", "tatoeba", "files"] = "sample"
    source_lang: Literal["de", "en", "fr", "cs"] = "de"
    target_lang: Literal["de", "en", "fr", "cs"] = "en"
    mirror: str | None = None
    sample: SampleCorpus = SampleCorpus()
    tatoeba: TatoebaCorpus = TatoebaCorpus()
    files: FilesCorpus = FilesCorpus()
    max_len: int = Field(50, ge=1, description="max tokens per side; longer pairs are dropped")
    max_ratio: float = Field(3.0, ge=1.0, description="max token-length ratio between sides")
    lowercase: bool = True
    min_freq: int = Field(2, ge=1)
    max_size: int = Field(30_000, ge=10)
    reverse_source: bool = True

    @model_validator(mode="after")
    def _distinct_langs(self) -> DataConfig:
        if self.source_lang == self.target_lang:
            raise ValueError(
                f"data.source_lang and data.target_lang are both {self.source_lang!r}: "
                "choose two different languages"
            )
        return self


# ---------------------------------------------------------------------------------------- model
class ModelConfig(_Section):
    emb_dim: int = Field(128, ge=1)
    hidden_dim: int = Field(256, ge=1)
    num_layers: int = Field(1, ge=1, le=8)
    dropout: float = Field(0.2, ge=0.0, lt=1.0)


# ---------------------------------------------------------------------------------------- train
class TrainConfig(_Section):
    epochs: int = Field(8, ge=1)
    batch_size: int = Field(128, ge=1, description="sentence pairs per global batch")
    bucket_pool: int = Field(
        50, ge=1, description="batches per length-sorting pool (1: random batches)"
    )
    optimizer: Literal["adam", "sgd"] = "adam"
    lr: float = Field(1e-2, gt=0)
    lr_halving_start: int | None = Field(
        7, ge=1, description="halve the lr every epoch from this one on (paper: 5 with SGD)"
    )
    clip_norm: float = Field(1.0, gt=0)
    teacher_forcing: float = Field(1.0, ge=0.0, le=1.0)
    label_smoothing: float = Field(
        0.0, ge=0.0, lt=1.0, description="training objective only; validation is plain NLL"
    )
    bf16: Literal["auto", "on", "off"] = "auto"
    seed: int = 1234
    num_workers: int = Field(1, ge=1)
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = Field(
        "PACK", description="Ray placement of the workers (STRICT_SPREAD: one node each)"
    )
    use_gpu: Literal["auto", "on", "off"] = "auto"
    max_failures: int = Field(2, ge=0)
    threads_per_worker: int = Field(1, ge=1)

    @field_validator("bf16", "use_gpu", mode="before")
    @classmethod
    def _yaml_bools(cls, v: Any) -> Any:
        # YAML reads `on`/`off`/`true` as booleans; accept them as the switch values.
        if isinstance(v, bool):
            return "on" if v else "off"
        return v

    @field_validator("placement_strategy", mode="before")
    @classmethod
    def _upper(cls, v: Any) -> Any:
        return v.upper() if isinstance(v, str) else v


# ----------------------------------------------------------------------------------------- tune
DISTRIBUTION_FORMS: Final = (
    "give exactly one of {choice: [a, b, ...]}, {grid: [a, b, ...]}, {uniform: [low, high]}, "
    "{loguniform: [low, high]}, {randint: [low, high]}"
)


class Distribution(_Section):
    """One search-space entry: exactly one of the keys is set. `grid` values are not drawn:
    every one of them is run (times every other grid key's values, times tune.num_samples)."""

    choice: list[Any] | None = None
    grid: list[Any] | None = None
    uniform: tuple[float, float] | None = None
    loguniform: tuple[float, float] | None = None
    randint: tuple[int, int] | None = None  # [low, high), like ray.tune.randint

    @model_validator(mode="after")
    def _exactly_one(self) -> Distribution:
        kinds = ("choice", "grid", "uniform", "loguniform", "randint")
        set_keys = [k for k in kinds if getattr(self, k) is not None]
        if len(set_keys) != 1:
            raise ValueError(f"{DISTRIBUTION_FORMS} (got {set_keys or 'none'})")
        for k in ("choice", "grid"):
            if getattr(self, k) == []:
                raise ValueError(f"{k}: give at least one value")
        for k in ("uniform", "loguniform", "randint"):
            lo_hi = getattr(self, k)
            if lo_hi and not lo_hi[0] < lo_hi[1]:
                raise ValueError(f"{k}: low must be below high (got {list(lo_hi)})")
        if self.loguniform and self.loguniform[0] <= 0:
            raise ValueError(f"loguniform: low must be above 0 (got {list(self.loguniform)})")
        return self

    def probes(self) -> list[tuple[str, Any]]:
        """(what, value) pairs that stand for every value this distribution can draw: each
        choice; the bounds (randint's high is exclusive, uniform's high is approached from
        below) and a value in between (a float draw must fit the key's type too)."""
        for k in ("choice", "grid"):
            values = getattr(self, k)
            if values is not None:
                return [(f"{k} {v!r}", v) for v in values]
        if self.randint is not None:
            low, high = self.randint
            return [(f"randint low {low}", low), (f"randint high {high} (exclusive)", high - 1)]
        kind, lo_hi = ("uniform", self.uniform) if self.uniform else ("loguniform", self.loguniform)
        lo, hi = lo_hi or (0.0, 0.0)  # one of the two is set (_exactly_one)
        mid = (lo + hi) / 2
        return [
            (f"{kind} low {lo}", lo),
            (f"{kind} value {mid} (draws are fractional)", mid),
            (f"{kind} high {hi}", math.nextafter(hi, lo)),  # draws stay below high
        ]


def _default_space() -> dict[str, Distribution]:
    return {
        "model.num_layers": Distribution(choice=[1, 2]),
        "model.dropout": Distribution(uniform=(0.1, 0.3)),
        "train.teacher_forcing": Distribution(uniform=(0.75, 1.0)),
    }


class TuneConfig(_Section):
    num_samples: int = Field(2, ge=1)
    metric: Literal["val_bleu", "val_loss", "val_ppl"] = "val_bleu"
    max_concurrent_trials: int = Field(0, ge=0, description="0: as many as the cluster fits")
    grace_period: int = Field(1, ge=1, description="ASHA: epochs before a trial may be stopped")
    reduction_factor: int = Field(8, ge=2)
    scheduler: Literal["asha", "fifo"] = "asha"  # fifo: no early stopping (equal budgets)
    seed: int = 9  # the default 2-sample sweep then compares a 1-layer with a 2-layer model
    export_top: int = Field(
        5, ge=1, description="best checkpoints of this many top trials -> models/top (ensembles)"
    )
    search_space: dict[str, Distribution] = Field(default_factory=_default_space)

    @field_validator("search_space", mode="before")
    @classmethod
    def _null_space(cls, v: Any) -> Any:
        # null (or {}): no search, every trial trains the base config as it is. (`dvc exp run
        # -S tune.search_space={}` merges into the mapping and changes nothing; `=null` works.)
        return {} if v is None else v

    @property
    def mode(self) -> Literal["max", "min"]:
        return "max" if self.metric == "val_bleu" else "min"

    @property
    def trials(self) -> int:
        """Trials a sweep runs: num_samples times the product of the grid keys' value counts."""
        return self.num_samples * math.prod(
            len(d.grid) for d in self.search_space.values() if d.grid is not None
        )


# ------------------------------------------------------------------------------------- evaluate
class EvaluateConfig(_Section):
    """Decoding settings: evaluate, validation BLEU and `pipeline translate` all default to
    these (the library's decoding defaults; the beam width is the application's)."""

    beam_size: int = Field(5, ge=1)
    length_penalty: float = Field(
        defaults.DEFAULT_LENGTH_PENALTY, ge=0.0, description="beam score / length**alpha"
    )
    max_len_ratio: float = Field(
        defaults.DEFAULT_MAX_LEN_RATIO, gt=0, description="decode up to ratio * source length + 10"
    )
    batch_size: int = Field(defaults.DEFAULT_BATCH_ROWS, ge=1)
    num_examples: int = Field(20, ge=0)
    length_buckets: list[int] = Field(default_factory=lambda: [10, 20, 30, 40])
    rank_bins: int = Field(
        5, ge=1, description="BLEU by average word-frequency rank: groups of equal size"
    )
    ensemble: int = Field(
        1, ge=1, description="decode with the sweep's top-K checkpoints (models/top/1..K)"
    )


# ----------------------------------------------------------------------------- mlflow, ray, paths
class MlflowConfig(_Section):
    tracking_uri: str | None = Field(None, description="None: sqlite mlflow.db in the project root")
    experiment: str | None = Field(None, description="None: seq2seq-<corpus>-<src>-<tgt>")
    retry_for_s: float = Field(
        600, ge=0, description="a tracking server lost mid-run: keep training, retry this long"
    )

    @field_validator("tracking_uri")
    @classmethod
    def _known_store(cls, v: str | None) -> str | None:
        return check_tracking_uri(v) if v else v


class RayConfig(_Section):
    address: str | None = Field(None, description="None: start a local cluster (or RAY_ADDRESS)")
    storage_path: str | None = Field(None, description="None: ray_results/ in the project root")
    shared_storage: bool = Field(
        False, description="storage_path is a folder every node mounts at the same path (NFS)"
    )
    num_cpus: int | None = Field(None, ge=1, description="local cluster only")
    health_check_interval_s: float = Field(0.2, gt=0)

    @field_validator("storage_path")
    @classmethod
    def _known_filesystem(cls, v: str | None) -> str | None:
        return check_storage_uri(v) if v else v


class PathsConfig(_Section):
    raw: str = "data/raw"
    clean: str = "data/clean"
    tokens: str = "data/tokens"
    prepared: str = "data/prepared"
    models: str = "models"
    metrics: str = "metrics"

    @model_validator(mode="after")
    def _separate_folders(self) -> PathsConfig:
        """Stages replace their output folder whole: no two may be the same folder or nested
        (as written; `check_output_folder` looks at the real filesystem)."""
        items = [(f"paths.{k}", os.path.normpath(v)) for k, v in self.model_dump().items()]
        for key, path in items:
            if path in (".", os.sep):
                raise ValueError(
                    f"{key}={path!r} is the project folder itself, which its stage would replace "
                    "whole: give it a folder of its own (e.g. data/raw)"
                )
        for (k1, p1), (k2, p2) in itertools.combinations(items, 2):
            if p1 == p2 or p2.startswith(p1 + os.sep) or p1.startswith(p2 + os.sep):
                raise ValueError(
                    f"{k1} ({p1}) and {k2} ({p2}) overlap: each stage replaces its whole output "
                    "folder, so give each key a folder of its own"
                )
        return self


def check_output_folder(path: str | Path, key: str) -> None:
    """UserError unless `path` (config key `key`) can be replaced whole by a stage: not an
    existing file, not the current folder or a folder above it. Call it before any work."""
    folder = Path(path)
    fix = f"set {key} to a folder of its own (the stage replaces it whole)"
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{key}: {folder} is a file, not a folder", fix=fix)
    resolved, here = folder.resolve(), Path.cwd().resolve()
    if resolved == here or resolved in here.parents:
        raise UserError(f"{key}: {folder} is the current folder or one above it", fix=fix)


# The one data key a trial may change: the prepared source order is flipped back per trial
# (pipeline.prepared.read_split), so reversed and natural order train side by side in one sweep.
TRIAL_DATA_KEYS: Final = ("data.reverse_source",)


class Config(_Section):
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    tune: TuneConfig = TuneConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    mlflow: MlflowConfig = MlflowConfig()
    ray: RayConfig = RayConfig()
    paths: PathsConfig = PathsConfig()

    @model_validator(mode="after")
    def _search_space_fits(self) -> Config:
        """Every search-space key is a config key and every value it can draw is valid there
        (checked now, not when Ray has started and a trial fails)."""
        space = self.tune.search_space
        if not space:
            return self
        base = self.model_dump()
        base["tune"]["search_space"] = {}  # the probes below must not check it again
        flat = flatten(base)
        for key, dist in space.items():
            if key not in flat or key.startswith("tune."):
                raise ValueError(
                    f"tune.search_space: {key!r} is not a config key; use a dotted path such as "
                    "model.dropout or train.lr"
                )
            if key.startswith(("data.", "paths.")) and key not in TRIAL_DATA_KEYS:
                raise ValueError(
                    f"tune.search_space: {key!r} changes the data every trial of a sweep shares "
                    "(only data.reverse_source can vary per trial); run each value as a DVC "
                    f"experiment instead: dvc exp run -S {key}=..."
                )
            for what, value in dist.probes():
                problem = _probe(base, key, value)
                if problem:
                    raise ValueError(f"tune.search_space.{key}: {what} is not valid: {problem}")
        return self

    def with_overrides(self, overrides: dict[str, Any]) -> Config:
        """A new validated Config with dotted keys replaced (used for Tune trials and --set)."""
        raw = self.model_dump()
        for key, value in overrides.items():
            _set_dotted(raw, key, value)
        return _validate(raw, source="overrides")


def trial_config(base: Config | Mapping[str, Any], sampled: Mapping[str, Any] | None) -> Config:
    """A Tune trial's config: the sweep's base config (a Config or its dump) with the trial's
    sampled dotted keys. The one place a trial config is rebuilt (trainable, callback, export)."""
    cfg = base if isinstance(base, Config) else Config.model_validate(base)
    return cfg.with_overrides(dict(sampled or {}))


def _probe(base: dict[str, Any], key: str, value: Any) -> str | None:
    """Why the config `base` with `key` set to `value` is invalid, or None if it is valid."""
    raw = copy.deepcopy(base)
    _set_dotted(raw, key, value)
    try:
        Config.model_validate(raw)
    except ValidationError as err:
        e = err.errors()[0]
        path = ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        named = path and path != key and not msg.startswith(path + ".")
        return f"{path}: {msg}" if named else msg
    return None


# ------------------------------------------------------------------------------------ loading
def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists and leaf values stay as they are."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v and key != "tune.search_space":
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = raw
    for i, part in enumerate(parts[:-1]):
        if not isinstance(node.get(part), dict):
            raise UserError(
                f"unknown config key {key!r}: {'.'.join(parts[: i + 1])!r} is not a section",
                fix="see params.yaml for the valid keys",
            )
        node = node[part]
    if parts[-1] not in node:
        raise UserError(f"unknown config key {key!r}", fix="see params.yaml for the valid keys")
    node[parts[-1]] = value


def _format_error(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling against params.yaml)"
        elif e["type"] == "model_type" and path.startswith("tune.search_space."):
            msg = DISTRIBUTION_FORMS
        elif e["type"] == "model_type":
            msg = "should be a section: a mapping of keys, as in params.yaml"
        got = e.get("input")
        shown = (
            ""
            if e["type"] in ("extra_forbidden", "missing") or isinstance(got, dict)
            else " (got an empty value)"
            if got is None
            else f" (got {got!r})"
        )
        named = path and not msg.startswith(path + ".")  # a section's own check names its keys
        lines.append(f"{path}: {msg}{shown}" if named else f"{msg}{shown}")
    return f"invalid config in {source}: " + "; ".join(lines)


def _validate(raw: Any, source: str) -> Config:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise UserError(
            f"{source} must hold a mapping of sections (data:, model:, train:, ...), not a "
            f"{_yaml_kind(raw)}",
            fix="see the project's params.yaml for the layout",
        )
    try:
        return Config.model_validate(raw)
    except ValidationError as err:
        fix = "correct the --set value" if source == "overrides" else f"correct the key in {source}"
        raise UserError(_format_error(err, source), fix=fix) from None


def _yaml_kind(value: Any) -> str:
    kinds = {list: "list", str: "string", bool: "boolean", int: "number", float: "number"}
    return kinds.get(type(value), type(value).__name__)


def parse_override(item: str) -> tuple[str, Any]:
    """'train.lr=3e-4' -> ('train.lr', 0.0003); the value is parsed as YAML."""
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise UserError(f"bad override {item!r}", fix="write --set section.key=value")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        parsed = value
    return key.strip(), parsed


def load_config(path: str | Path = "params.yaml", overrides: list[str] | None = None) -> Config:
    """Read params.yaml and apply `key=value` overrides. The file must exist (an empty file means
    all defaults): a typo in --params, or a command run outside the project folder, must not
    run silently on the built-in defaults."""
    path = Path(path)
    raw = _read_yaml(path)
    cfg = _validate(raw, str(path))
    pairs = dict(parse_override(o) for o in overrides or [])
    return cfg.with_overrides(pairs) if pairs else cfg


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last one
    silently: a second `train:` section would drop every key of the first)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor` may be overridden
                continue
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _read_yaml(path: Path) -> Any:
    """The parsed YAML of the params file `path`; UserError for every way it can be unusable."""
    where = "" if path.is_absolute() else f" (looked in {Path.cwd()})"
    if path.is_dir():
        inside = path / "params.yaml"
        fix = f"pass --params {inside}" if inside.is_file() else "pass --params a params.yaml file"
        raise UserError(f"params file {path} is a folder, not a file", fix=fix)
    if not path.exists():
        raise UserError(
            f"params file {path} does not exist{where}",
            fix="run the command in the project folder (where params.yaml is), or pass "
            "--params path/to/params.yaml",
        )
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise UserError(f"cannot read params file {path} ({reason})", fix="check it") from None
    except UnicodeDecodeError as err:
        raise UserError(
            f"params file {path} is not UTF-8 text ({err.reason} at byte {err.start})",
            fix="save it as UTF-8",
        ) from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        detail = " ".join(f"{problem}{where}".split())
        raise UserError(f"{path} is not valid YAML: {detail}", fix="fix the syntax") from None
