"""params.yaml -> one frozen, validated config tree.

Every default lives here; params.yaml repeats them with a comment per key. Unknown keys, wrong
types and out-of-range values are rejected before any work starts, with the key's path in the
message. `load_config(path, overrides)` is the only reader of params.yaml in the project.

Environment variables: one rule for all of them, `from_env` below. A key set in params.yaml (or
by --set / -S) wins; the variable fills a key left null: `ray.address` <- RAY_ADDRESS,
`mlflow.tracking_uri` <- MLFLOW_TRACKING_URI, `data.mirror` <- SEQ2SEQ_DATA_MIRROR.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

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
    """The value of config `key`: its own when set, else its environment variable's (if any)."""
    env = os.environ if env is None else env
    return value or env.get(ENV_FALLBACKS[key]) or None


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


# ----------------------------------------------------------------------------------------- data
class SampleCorpus(_Section):
    num_pairs: int = Field(20_000, ge=10, description="pairs to generate (all splits)")
    seed: int = Field(1234, description="generator seed: same seed, same corpus")
    valid_fraction: float = Field(0.05, gt=0, lt=0.5)
    test_fraction: float = Field(0.05, gt=0, lt=0.5)


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
    emb_dim: int = Field(64, ge=1)
    hidden_dim: int = Field(128, ge=1)
    num_layers: int = Field(2, ge=1, le=8)
    dropout: float = Field(0.2, ge=0.0, lt=1.0)


# ---------------------------------------------------------------------------------------- train
class TrainConfig(_Section):
    epochs: int = Field(3, ge=1)
    batch_size: int = Field(64, ge=1, description="sentence pairs per global batch")
    bucket_pool: int = Field(
        50, ge=1, description="batches per length-sorting pool (1: random batches)"
    )
    optimizer: Literal["adam", "sgd"] = "adam"
    lr: float = Field(1e-2, gt=0)
    lr_halving_start: int | None = Field(
        None, ge=1, description="halve the lr every epoch from this one on (paper: 5 with SGD)"
    )
    clip_norm: float = Field(1.0, gt=0)
    teacher_forcing: float = Field(1.0, ge=0.0, le=1.0)
    bf16: Literal["auto", "on", "off"] = "auto"
    seed: int = 1234
    num_workers: int = Field(1, ge=1)
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


# ----------------------------------------------------------------------------------------- tune
class Distribution(_Section):
    """One search-space entry: exactly one of the keys is set."""

    choice: list[Any] | None = None
    uniform: tuple[float, float] | None = None
    loguniform: tuple[float, float] | None = None
    randint: tuple[int, int] | None = None  # [low, high), like ray.tune.randint

    @model_validator(mode="after")
    def _exactly_one(self) -> Distribution:
        set_keys = [k for k in ("choice", "uniform", "loguniform", "randint") if getattr(self, k)]
        if len(set_keys) != 1:
            raise ValueError(
                "give exactly one of choice: [..], uniform: [lo, hi], loguniform: [lo, hi], "
                f"randint: [lo, hi] (got {set_keys or 'none'})"
            )
        for k in ("uniform", "loguniform", "randint"):
            lo_hi = getattr(self, k)
            if lo_hi and not lo_hi[0] < lo_hi[1]:
                raise ValueError(f"{k}: low must be below high (got {list(lo_hi)})")
        return self


def _default_space() -> dict[str, Distribution]:
    return {
        "model.num_layers": Distribution(choice=[1, 2]),
        "model.dropout": Distribution(uniform=(0.0, 0.3)),
        "train.teacher_forcing": Distribution(uniform=(0.5, 1.0)),
    }


class TuneConfig(_Section):
    num_samples: int = Field(4, ge=1)
    metric: Literal["val_bleu", "val_loss", "val_ppl"] = "val_bleu"
    max_concurrent_trials: int = Field(0, ge=0, description="0: as many as the cluster fits")
    grace_period: int = Field(1, ge=1, description="ASHA: epochs before a trial may be stopped")
    reduction_factor: int = Field(2, ge=2)
    seed: int = 1234
    search_space: dict[str, Distribution] = Field(default_factory=_default_space)

    @property
    def mode(self) -> Literal["max", "min"]:
        return "max" if self.metric == "val_bleu" else "min"


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


# ----------------------------------------------------------------------------- mlflow, ray, paths
class MlflowConfig(_Section):
    tracking_uri: str | None = Field(None, description="None: sqlite mlflow.db in the project root")
    experiment: str | None = Field(None, description="None: seq2seq-<corpus>-<src>-<tgt>")


class RayConfig(_Section):
    address: str | None = Field(None, description="None: start a local cluster (or RAY_ADDRESS)")
    storage_path: str | None = Field(None, description="None: ray_results/ in the project root")
    num_cpus: int | None = Field(None, ge=1, description="local cluster only")
    health_check_interval_s: float = Field(0.2, gt=0)


class PathsConfig(_Section):
    raw: str = "data/raw"
    clean: str = "data/clean"
    tokens: str = "data/tokens"
    prepared: str = "data/prepared"
    models: str = "models"
    metrics: str = "metrics"


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
    def _search_space_keys_exist(self) -> Config:
        flat = flatten(self.model_dump(exclude={"tune"}))
        for key in self.tune.search_space:
            if key not in flat:
                raise ValueError(
                    f"tune.search_space: {key!r} is not a config key; use a dotted path such as "
                    "model.dropout or train.lr"
                )
        return self

    def with_overrides(self, overrides: dict[str, Any]) -> Config:
        """A new validated Config with dotted keys replaced (used for Tune trials and --set)."""
        raw = self.model_dump()
        for key, value in overrides.items():
            _set_dotted(raw, key, value)
        return _validate(raw, source="overrides")


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
        got = e.get("input")
        shown = (
            ""
            if e["type"] in ("extra_forbidden", "missing") or isinstance(got, dict)
            else (f" (got {got!r})")
        )
        lines.append(f"{path or '<root>'}: {msg}{shown}" if path else f"{msg}{shown}")
    return f"invalid config in {source}: " + "; ".join(lines)


def _validate(raw: Any, source: str) -> Config:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise UserError(f"{source} must hold a mapping of sections", fix="see params.yaml")
    try:
        return Config.model_validate(raw)
    except ValidationError as err:
        fix = "correct the --set value" if source == "overrides" else f"correct the key in {source}"
        raise UserError(_format_error(err, source), fix=fix) from None


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
    """Read params.yaml (a missing file means all defaults) and apply `key=value` overrides."""
    path = Path(path)
    raw: Any = {}
    if path.exists():
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as err:
            raise UserError(f"{path} is not valid YAML: {err}", fix="fix the syntax") from None
    cfg = _validate(raw, str(path))
    pairs = dict(parse_override(o) for o in overrides or [])
    return cfg.with_overrides(pairs) if pairs else cfg
