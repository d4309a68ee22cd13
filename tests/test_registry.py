"""pipeline.registry: the best model as a pyfunc model in the Model Registry, on a real MLflow
SQLite store; loaded back by name in a fresh Python process."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from conftest import VENV_BIN, make_best, make_prepared
from mlflow.tracking import MlflowClient

from pipeline import registry, tracking
from pipeline.config import Config
from pipeline.stages.translate import prepare
from seq2seq.checkpoint import load_checkpoint, model_from_checkpoint
from seq2seq.evaluation import DecodeSpec, translate_texts

SENTENCES = ["w1 w2 w3", "", "w4 w4 zzz-unknown"]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Config:
    """Prepared data and a models/best as tune exports it (untrained tiny model), as the cwd."""
    monkeypatch.chdir(tmp_path)
    prepared = make_prepared(tmp_path / "data" / "prepared")
    cfg = Config().with_overrides(
        {
            "paths.prepared": str(prepared),
            "model.emb_dim": 8,
            "model.hidden_dim": 16,
            "model.num_layers": 1,
            "data.lowercase": False,
            "evaluate.beam_size": 2,
        }
    )
    make_best(cfg, tmp_path / "models" / "best", lowercase=False)
    return cfg


def _expected(best: Path, texts: list[str], beam: int) -> list[str]:
    ckpt = load_checkpoint(best)
    model = model_from_checkpoint(ckpt).eval()
    return translate_texts(model, prepare(ckpt, texts), ckpt.tgt_vocab, DecodeSpec(beam, 256))


def _store(tmp_path: Path) -> tuple[MlflowClient, str, str]:
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    client.search_experiments(max_results=1)
    exp = tracking.ensure_experiment(client, "seq2seq-sample-de-en")
    run = tracking.open_run(client, exp, "sweep-1", name="sweep-1", tags={})
    return client, exp, run


def test_registered_name_and_dvc_experiment(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = Config().with_overrides({"data.corpus": "multi30k", "data.source_lang": "en",
                                   "data.target_lang": "de"})  # fmt: skip
    assert registry.registered_name(cfg) == "seq2seq-multi30k-en-de"
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    assert registry.dvc_experiment() == "workspace"
    monkeypatch.setenv("DVC_EXP_NAME", "bushy-lamb")
    assert registry.dvc_experiment() == "bushy-lamb"


def test_best_model_is_logged_registered_and_loads_in_a_fresh_process(
    project: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, _, run = _store(tmp_path)
    best = Path("models/best")
    monkeypatch.setenv("DVC_EXP_NAME", "exp-one")
    v1 = registry.log_best_model(client, project, run, best, tags={"git_commit": "abc123"})
    monkeypatch.delenv("DVC_EXP_NAME")
    v2 = registry.log_best_model(client, project, run, best, tags={"git_commit": "def456"})

    name = "seq2seq-sample-de-en"
    assert (v1.name, str(v1.version), str(v2.version)) == (name, "1", "2")  # one per sweep
    assert v1.tags["dvc_exp"] == "exp-one" and v1.tags["git_commit"] == "abc123"
    assert v2.tags["dvc_exp"] == "workspace" and v2.tags["git_commit"] == "def456"
    assert v2.run_id == run and client.get_registered_model(name).description

    # the logged model: signature, input example, artifacts, explicit requirements, no code copy
    model = client.get_logged_model(v2.tags["model_id"])
    assert model.source_run_id == run
    import mlflow.artifacts
    from mlflow.models import Model

    root = Path(
        mlflow.artifacts.download_artifacts(
            f"models:/{name}/2", tracking_uri=client.tracking_uri, dst_path=str(tmp_path / "m")
        )
    )
    info = Model.load(str(root))
    assert info.signature.inputs.input_names() == ["source"]
    assert info.signature.outputs.input_names() == ["translation"]
    assert info.signature.params.to_dict()[0]["name"] == "beam_size"
    assert info.saved_input_example_info is not None
    files = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    for art in ("checkpoint.pt", "config.json", "vocab.src.json", "vocab.tgt.json",
                "preprocessing.json"):  # fmt: skip
        assert f"artifacts/{art}" in files, files
    assert not any(f.startswith("code/") for f in files)
    reqs = (root / "requirements.txt").read_text()
    assert "torch==" in reqs and "mlflow==" in reqs
    prep = json.loads((root / "artifacts" / "preprocessing.json").read_text())
    assert prep["lowercase"] is False and prep["reverse_source"] is True

    # a fresh interpreter loads the latest version by name and translates
    script = (
        "import json, sys, mlflow, pandas as pd\n"
        f"m = mlflow.pyfunc.load_model('models:/{name}/latest')\n"
        "src = json.loads(sys.argv[1])\n"
        "out = m.predict(pd.DataFrame({'source': src}))\n"
        "greedy = m.predict(pd.DataFrame({'source': src}), params={'beam_size': 1})\n"
        "print(json.dumps([list(out.columns), out['translation'].tolist(),"
        " greedy['translation'].tolist()]))\n"
    )
    env = {**os.environ, "MLFLOW_TRACKING_URI": client.tracking_uri}
    proc = subprocess.run(
        [str(VENV_BIN / "python"), "-c", script, json.dumps(SENTENCES)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "pip install" not in proc.stderr and "Installing" not in proc.stderr
    columns, beam2, greedy = json.loads(proc.stdout.strip().splitlines()[-1])
    assert columns == ["translation"]
    assert beam2 == _expected(best, SENTENCES, beam=2)  # default beam: evaluate.beam_size
    assert greedy == _expected(best, SENTENCES, beam=1)
    assert beam2[1] == ""  # an empty line stays empty


def test_pyfunc_predict_in_process_accepts_lists(project: Config, tmp_path: Path) -> None:
    client, _, run = _store(tmp_path)
    registry.log_best_model(client, project, run, Path("models/best"))
    import mlflow

    mlflow.set_tracking_uri(client.tracking_uri)
    try:
        model = mlflow.pyfunc.load_model("models:/seq2seq-sample-de-en/1")
    finally:
        mlflow.set_tracking_uri(None)
    out = model.predict(pd.DataFrame({"source": ["w1 w2"]}), params={"beam_size": 1})
    assert out["translation"].tolist() == _expected(Path("models/best"), ["w1 w2"], beam=1)
