"""pipeline.tracking: URI resolution (incl. `dvc exp run --temp`) and parent/child runs, on a
real MLflow SQLite store in a temporary folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from pipeline import tracking
from pipeline.config import Config


# ------------------------------------------------------------------------------ resolution
def test_project_root_is_cwd(tmp_path: Path) -> None:
    assert tracking.project_root(tmp_path) == tmp_path.resolve()


def test_project_root_escapes_dvc_temp_copy(tmp_path: Path) -> None:
    inner = tmp_path / "proj" / ".dvc" / "tmp" / "exps" / "tmpab12cd" / "sub"
    inner.mkdir(parents=True)
    assert tracking.project_root(inner) == (tmp_path / "proj").resolve()
    assert tracking.project_root(inner.parent) == (tmp_path / "proj").resolve()


def test_project_root_ignores_lookalike(tmp_path: Path) -> None:
    odd = tmp_path / "tmp" / "exps" / "x"  # no .dvc above: an ordinary folder
    odd.mkdir(parents=True)
    assert tracking.project_root(odd) == odd.resolve()


def test_default_uri_is_absolute_sqlite_in_root(tmp_path: Path) -> None:
    uri = tracking.tracking_uri(None, cwd=tmp_path, env={})
    assert uri == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert uri.startswith("sqlite:////")


def test_default_uri_under_dvc_temp_points_at_outer_project(tmp_path: Path) -> None:
    inner = tmp_path / ".dvc" / "tmp" / "exps" / "tmp1234"
    inner.mkdir(parents=True)
    assert tracking.tracking_uri(None, cwd=inner, env={}) == (
        f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    )


def test_uri_precedence_config_then_env(tmp_path: Path) -> None:
    env = {"MLFLOW_TRACKING_URI": "http://mlflow.example:5000"}
    assert tracking.tracking_uri(None, cwd=tmp_path, env=env) == "http://mlflow.example:5000"
    assert tracking.tracking_uri("http://other:1", cwd=tmp_path, env=env) == "http://other:1"


def test_sqlite_file_names_the_database_of_sqlite_uris_only(tmp_path: Path) -> None:
    assert tracking.sqlite_file(f"sqlite:///{tmp_path / 'm.db'}") == tmp_path / "m.db"
    root = tmp_path.resolve()
    assert tracking.sqlite_file(tracking.tracking_uri(cwd=root, env={})) == root / "mlflow.db"
    assert tracking.sqlite_file("http://127.0.0.1:5000") is None
    assert tracking.sqlite_file(f"file:{tmp_path}") is None


def test_relative_sqlite_uri_is_anchored_at_root(tmp_path: Path) -> None:
    uri = tracking.tracking_uri("sqlite:///runs/x.db", cwd=tmp_path, env={})
    assert uri == f"sqlite:///{tmp_path.resolve()}/runs/x.db"


def test_experiment_name_default_and_override() -> None:
    cfg = Config()
    assert tracking.experiment_name(cfg) == "seq2seq-sample-de-en"
    assert tracking.experiment_name(cfg.with_overrides({"mlflow.experiment": "mine"})) == "mine"


def test_config_params_are_flat_strings() -> None:
    cfg = Config().with_overrides({"model.hidden_dim": 48, "train.lr": 0.002})
    params = tracking.config_params(cfg)
    assert params["model.hidden_dim"] == "48"
    assert params["train.lr"] == "0.002"
    assert "tune.search_space" in params
    assert all(isinstance(v, str) for v in params.values())


# ----------------------------------------------------------------------------- real store
@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[MlflowClient, str]:
    monkeypatch.chdir(tmp_path)
    client = tracking.client_for(Config())
    assert (tmp_path / "mlflow.db").is_file()  # schema created up front
    exp_id = tracking.ensure_experiment(client, "seq2seq-sample-de-en")
    assert tracking.ensure_experiment(client, "seq2seq-sample-de-en") == exp_id  # idempotent
    return client, exp_id


def test_open_run_reuses_by_key(store: tuple[MlflowClient, str]) -> None:
    client, exp_id = store
    params = tracking.config_params(Config())
    a = tracking.open_run(client, exp_id, "k1", name="a", tags={"corpus": "x"}, params=params)
    tracking.close_run(client, a)
    b = tracking.open_run(client, exp_id, "k1", name="a", tags={}, params=params)
    assert a == b
    assert client.get_run(b).info.status == "RUNNING"
    c = tracking.open_run(client, exp_id, "k1", name="a", tags={}, reuse=False)
    assert c != a
    assert len(client.get_run(a).data.params) == len(params)  # > 100: logged in chunks


def test_sweep_parent_children_metrics_and_tags(store: tuple[MlflowClient, str]) -> None:
    client, exp_id = store
    cfg = Config().with_overrides({"train.epochs": 3})
    tags = tracking.base_tags(cfg, "pipeline tune")
    sweep = tracking.SweepTracker(
        client, exp_id, "sweep-1", tags=tags, params=tracking.config_params(cfg), epochs=3
    )
    for trial, epochs in (("t1", 3), ("t2", 1)):
        sweep.trial_started(trial, f"name {trial}", cfg.with_overrides({"model.num_layers": 1}))
        for e in range(1, epochs + 1):
            sweep.trial_result(trial, {"epoch": e, "train_loss": 5.0 / e, "val_bleu": e * 1.5})
    assert sweep.trial_finished("t1") is False
    assert sweep.trial_finished("t2") is True  # fewer epochs than configured: ASHA stop

    children = client.search_runs([exp_id], f"tags.`mlflow.parentRunId` = '{sweep.parent_id}'")
    assert len(children) == 2
    t1 = next(r for r in children if r.data.tags["trial_id"] == "t1")
    assert t1.data.params["model.num_layers"] == "1"
    assert t1.data.tags["stopped_early"] == "false"
    assert t1.data.tags["corpus"] == "sample" and t1.data.tags["direction"] == "de-en"
    assert t1.data.tags["dvc_stage"]
    history = client.get_metric_history(t1.info.run_id, "train_loss")
    assert [m.step for m in history] == [1, 2, 3]
    t2 = next(r for r in children if r.data.tags["trial_id"] == "t2")
    assert t2.data.tags["stopped_early"] == "true"
    assert t2.info.status == "FINISHED"

    # --resume: a new tracker with the same key reuses the parent and the trial's run
    again = tracking.SweepTracker(
        client, exp_id, "sweep-1", tags=tags, params=tracking.config_params(cfg), epochs=3
    )
    assert again.parent_id == sweep.parent_id
    assert again.trial_started("t1", "name t1", cfg.with_overrides({"model.num_layers": 1})) == (
        t1.info.run_id
    )
    tracking.log_summary(client, again.parent_id, {"val_bleu": 4.5, "trial": "t1"})
    parent = client.get_run(again.parent_id)
    assert parent.data.metrics["best_val_bleu"] == 4.5
    assert parent.data.tags["best_trial"] == "t1"


def test_git_commit_tag_in_a_repo(tmp_path: Path) -> None:
    assert tracking.git_commit(tmp_path) is None  # not a repository
    root = Path(__file__).resolve().parents[1]
    commit = tracking.git_commit(root)
    assert commit is None or len(commit) == 40


# ------------------------------------------------------------------------ runs page, datasets
def test_experiment_gets_kind_description_and_saved_runs_view(
    store: tuple[MlflowClient, str],
) -> None:
    import json

    client, exp_id = store
    tags = client.get_experiment(exp_id).tags
    assert tags[tracking.EXPERIMENT_KIND_TAG] == "custom_model_development"
    assert tracking.runs_path(exp_id) in tags[tracking.NOTE_TAG]  # a link in the description
    view = json.loads(tags[tracking.SAVED_VIEW_PREFIX + tracking.RUNS_VIEW_ID])
    assert view["name"] == tracking.RUNS_VIEW_NAME and isinstance(view["createdAt"], int)
    state = json.loads(view["state"])
    assert "metrics.`val_bleu`" in state["selectedColumns"]
    assert "attributes.`Dataset`" in state["selectedColumns"]
    assert tracking.runs_path(exp_id).endswith(
        "workflowType=machine_learning&viewStateShareKey=seq2seq-runs"
    )

    client.set_experiment_tag(exp_id, tracking.NOTE_TAG, "my own notes")
    before = client.get_experiment(exp_id).last_update_time
    tracking.ensure_experiment(client, "seq2seq-sample-de-en")  # nothing to change: no writes
    after = client.get_experiment(exp_id)
    assert after.tags[tracking.NOTE_TAG] == "my own notes"  # a user's description is kept
    assert after.last_update_time == before


def test_ui_hint_names_the_runs_page(store: tuple[MlflowClient, str]) -> None:
    client, exp_id = store
    hint = tracking.ui_hint(client, exp_id)
    assert "mlflow ui" in hint and f"/#/experiments/{exp_id}/runs?workflowType=" in hint


def test_runs_carry_source_tags() -> None:
    tags = tracking.base_tags(Config(), "pipeline tune")
    assert tags["mlflow.source.type"] == "LOCAL" and tags["mlflow.source.name"]


def _prepared_with_manifest(tmp_path: Path) -> Config:
    import json

    from conftest import make_prepared

    prepared = make_prepared(tmp_path / "prepared")
    raw = tmp_path / "raw"
    raw.mkdir()
    manifest = {"splits": {"train": {"pairs": 192, "sha256": "ab" * 32}}}
    (raw / "manifest.json").write_text(json.dumps(manifest))
    return Config().with_overrides({"paths.prepared": str(prepared), "paths.raw": str(raw)})


def test_dataset_input_describes_the_split_file(tmp_path: Path) -> None:
    import hashlib
    import json

    cfg = _prepared_with_manifest(tmp_path)
    path = tmp_path / "prepared" / "train.parquet"
    inp = tracking.dataset_input(cfg, "train")
    ds = inp.dataset
    assert ds.name == "sample-de-en-train"
    assert ds.digest == hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    assert ds.source_type == "local"
    assert json.loads(ds.source)["uri"] == path.resolve().as_uri()
    profile = json.loads(ds.profile)
    assert profile["num_rows"] == 192 and profile["raw_sha256"] == "ab" * 32
    assert [c["name"] for c in json.loads(ds.schema)["mlflow_colspec"]] == [
        "src", "tgt", "src_ids", "tgt_ids",
    ]  # fmt: skip
    assert [(t.key, t.value) for t in inp.tags] == [("mlflow.data.context", "training")]
    names = [i.dataset.name for i in tracking.dataset_inputs(cfg, ["valid", "test", "nope"])]
    assert names == ["sample-de-en-valid", "sample-de-en-test"]  # missing files left out


def test_sweep_runs_get_dataset_inputs_once(
    store: tuple[MlflowClient, str], tmp_path: Path
) -> None:
    cfg = _prepared_with_manifest(tmp_path)
    inputs = tracking.dataset_inputs(cfg, ["train", "valid"])
    params = tracking.config_params(cfg)
    client, exp_id = store
    for _ in range(2):  # --resume reopens the same runs and logs the inputs again
        sweep = tracking.SweepTracker(
            client, exp_id, "sweep-ds", tags={}, params=params, epochs=1, inputs=inputs
        )
        child = sweep.trial_started("t1", "t1", cfg)
    for run_id in (sweep.parent_id, child):
        got = client.get_run(run_id).inputs.dataset_inputs
        assert sorted((i.dataset.name, i.tags[0].value) for i in got) == [
            ("sample-de-en-train", "training"),
            ("sample-de-en-valid", "validation"),
        ]
