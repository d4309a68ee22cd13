"""The best model of a sweep as an MLflow pyfunc model, registered in the Model Registry.

`Translator` is a `mlflow.pyfunc.PythonModel`: a DataFrame with a `source` column of sentences
in, a DataFrame with a `translation` column out (params: `beam_size`, `batch_size`). Its
artifacts are `models/best` (checkpoint, config, both vocabularies) plus `preprocessing.json`;
predictions take the same path as `pipeline translate` (the checkpoint's preprocessing,
`seq2seq.evaluation.translate_texts`). The class is pickled by reference to this module, so
loading needs this project installed (`pip install -e .`), not an environment restore: the
model lists explicit pip requirements (no inference, no `code/` copy).

Registered as `seq2seq-<corpus>-<src>-<tgt>`, a new version per sweep, tagged with the DVC
experiment (env `DVC_EXP_NAME`, else "workspace"), the git commit, the sweep and its best trial.
"""

from __future__ import annotations

import json
import os
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.entities.model_registry import ModelVersion
from mlflow.models import ModelSignature
from mlflow.pyfunc import PythonModel
from mlflow.tracking._tracking_service.utils import _use_tracking_uri
from mlflow.types import ColSpec, DataType, ParamSchema, ParamSpec, Schema

from pipeline.config import Config
from seq2seq.defaults import DEFAULT_BATCH_ROWS

SOURCE, TRANSLATION = "source", "translation"
MODEL_NAME = "model"  # the logged model's name on the run
BEST_FILES = {  # artifact key -> file in models/best
    "checkpoint": "checkpoint.pt",
    "config": "config.json",
    "vocab_src": "vocab.src.json",
    "vocab_tgt": "vocab.tgt.json",
}
PREPROCESSING_KEYS = ("source_lang", "target_lang", "lowercase", "reverse_source", "max_len")
REQUIREMENTS = ("mlflow", "torch", "polars", "pandas", "pydantic", "rich", "pyyaml", "sacrebleu")


def registered_name(cfg: Config) -> str:
    d = cfg.data
    return f"seq2seq-{d.corpus}-{d.source_lang}-{d.target_lang}"


def dvc_experiment() -> str:
    """The DVC experiment this process runs in (`dvc exp run` sets DVC_EXP_NAME)."""
    return os.environ.get("DVC_EXP_NAME") or "workspace"


class Translator(PythonModel):
    """Sentences -> translations with a seq2seq checkpoint (greedy or beam search)."""

    def load_context(self, context: Any) -> None:
        import torch

        from seq2seq.checkpoint import load_checkpoint, model_from_checkpoint

        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.ckpt = load_checkpoint(context.artifacts["checkpoint"], map_location="cpu")
        self.model = model_from_checkpoint(self.ckpt).to(self.device).eval()

    def predict(self, context, model_input, params=None):
        """model_input: a DataFrame with a `source` column (or a list of strings) -> a DataFrame
        with a `translation` column. No type hints: MLflow would build a signature from them."""
        from pipeline.stages.translate import _decoding, prepare
        from seq2seq.evaluation import DecodeSpec, translate_texts

        frame = (
            model_input
            if isinstance(model_input, pd.DataFrame)
            else pd.DataFrame({SOURCE: list(model_input)})
        )
        texts = ["" if v is None else str(v) for v in frame[SOURCE].tolist()]
        params = params or {}
        ratio, alpha = _decoding(self.ckpt)
        rows = int(params.get("batch_size", DEFAULT_BATCH_ROWS))
        spec = DecodeSpec(int(params.get("beam_size", 1)), rows, ratio, alpha)
        src = prepare(self.ckpt, texts)
        out = translate_texts(self.model, src, self.ckpt.tgt_vocab, spec, device=self.device)
        return pd.DataFrame({TRANSLATION: out})


def signature(beam_size: int) -> ModelSignature:
    return ModelSignature(
        inputs=Schema([ColSpec(DataType.string, SOURCE)]),
        outputs=Schema([ColSpec(DataType.string, TRANSLATION)]),
        params=ParamSchema(
            [
                ParamSpec("beam_size", DataType.long, int(beam_size)),
                ParamSpec("batch_size", DataType.long, DEFAULT_BATCH_ROWS),
            ]
        ),
    )


def pip_requirements() -> list[str]:
    """Pinned to what is installed here (explicit, so MLflow infers nothing: fast)."""
    reqs = []
    for name in REQUIREMENTS:
        try:
            reqs.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return reqs


def _example(best: Path) -> pd.DataFrame:
    """Up to two training-domain sentences from the prepared test split when it is around."""
    cfg = json.loads((best / "config.json").read_text())
    test = Path(cfg.get("paths", {}).get("prepared", "")) / "test.parquet"
    sentences: list[str] = []
    if test.is_file():
        import polars as pl

        sentences = pl.read_parquet(test, columns=["src"]).head(2)["src"].to_list()
    return pd.DataFrame({SOURCE: sentences or ["ein mann fährt fahrrad ."]})


def _preprocessing(best: Path, config: dict) -> dict[str, Any]:
    """What translating must repeat: the checkpoint's own record (else the config's data)."""
    from seq2seq.checkpoint import load_checkpoint

    prep = getattr(load_checkpoint(best), "preprocessing", None)
    if prep is not None and hasattr(prep, "to_dict"):
        return dict(prep.to_dict())
    data = config.get("data", {})
    return {k: data.get(k) for k in PREPROCESSING_KEYS}


def log_best_model(
    client: Any,
    cfg: Config,
    run_id: str,
    best: str | Path,
    *,
    tags: dict[str, str] | None = None,
) -> ModelVersion:
    """Log `best` (models/best) as a pyfunc model on run `run_id` and register a new version.

    Uses the fluent API on `client`'s store (the previous tracking URI is restored after);
    leaving the fluent run marks `run_id` FINISHED.
    """
    best = Path(best).resolve()
    config = json.loads((best / "config.json").read_text())
    beam = int(config.get("evaluate", {}).get("beam_size", 1))
    name = registered_name(cfg)
    # the fluent API on client's store; the global URI goes back to exactly what it was (unset
    # stays unset: pinning the resolved default would tie later calls to this cwd's store)
    with _use_tracking_uri(client.tracking_uri), tempfile.TemporaryDirectory() as tmp:
        prep = Path(tmp) / "preprocessing.json"
        prep.write_text(json.dumps(_preprocessing(best, config), indent=2) + "\n")
        artifacts = {key: str(best / f) for key, f in BEST_FILES.items()}
        artifacts["preprocessing"] = str(prep)
        with mlflow.start_run(run_id=run_id, log_system_metrics=False):
            info = mlflow.pyfunc.log_model(
                name=MODEL_NAME,
                python_model=Translator(),
                artifacts=artifacts,
                signature=signature(beam),
                input_example=_example(best),
                pip_requirements=pip_requirements(),
                registered_model_name=name,
                await_registration_for=0,
            )
    version = client.get_model_version(name, str(info.registered_model_version))
    all_tags = {"dvc_exp": dvc_experiment(), "model_id": info.model_id, **(tags or {})}
    for key, value in all_tags.items():
        client.set_model_version_tag(name, version.version, key, str(value))
    if not client.get_registered_model(name).description:
        client.update_registered_model(name, description=_description(name))
    return client.get_model_version(name, version.version)


def _description(name: str) -> str:
    return (
        "LSTM seq2seq translator (pyfunc): a DataFrame with a `source` column of sentences in, "
        "a `translation` column out (params `beam_size`, `batch_size`). One version per "
        "`pipeline tune` sweep (its best trial); tags `dvc_exp`, `git_commit`, `sweep`. Load: "
        f'`mlflow.pyfunc.load_model("models:/{name}/latest")` in an environment with this '
        "project installed."
    )
