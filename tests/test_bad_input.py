"""Bad input as a new user gives it, through the real `pipeline` command where practical.

The product rule for every case: one line on stderr naming the problem and the fix, exit 2, no
traceback, no hang, and earlier outputs left exactly as they were. Cases that already behaved
are here too, so that they stay that way.
"""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, pipeline_cmd

from pipeline import config as config_mod
from pipeline.config import Config, check_storage_root, from_env, load_config
from pipeline.errors import UserError

PARAMS = str(ROOT / "params.yaml")


def run(*args: str, cwd: Path, stdin: bytes = b"", env: dict | None = None):
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(
        [*pipeline_cmd(), *args],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        env=full_env,
        timeout=120,
    )


def one_line_error(res: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit 2, nothing on stdout, exactly one non-blank stderr line with every needle."""
    err = res.stderr.decode("utf-8", "replace")
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert res.returncode == 2, err
    assert res.stdout == b"", res.stdout
    assert len(lines) == 1, err
    assert lines[0].startswith("error:") and "Fix:" in lines[0], lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


# ------------------------------------------------------------------------------ params file
def test_missing_params_file_is_an_error_not_the_defaults(tmp_path):
    res = run("download", "--params", "does-not-exist.yaml", cwd=tmp_path)
    one_line_error(res, "params file does-not-exist.yaml does not exist", str(tmp_path), "--params")
    assert list(tmp_path.iterdir()) == []  # nothing was downloaded on built-in defaults


def test_no_params_yaml_in_the_folder_is_an_error(tmp_path):
    res = run("download", cwd=tmp_path)
    one_line_error(res, "params.yaml does not exist", "project folder")
    assert list(tmp_path.iterdir()) == []


def test_params_naming_a_folder(tmp_path):
    one_line_error(run("clean", "--params", str(tmp_path), cwd=tmp_path), "is a folder")
    res = run("clean", "--params", str(ROOT), cwd=tmp_path)
    one_line_error(res, "is a folder", f"pass --params {ROOT / 'params.yaml'}")


def test_params_file_not_utf8(tmp_path):
    (tmp_path / "params.yaml").write_bytes("data:\n  corpus: sample # Größe\n".encode("latin-1"))
    one_line_error(run("clean", cwd=tmp_path), "params.yaml is not UTF-8 text", "at byte")


def test_params_file_unreadable(tmp_path, monkeypatch):
    path = tmp_path / "params.yaml"
    path.write_text("data: {}\n")

    def denied(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", denied)  # chmod 000 does not stop root
    with pytest.raises(UserError, match=r"cannot read params file .*Permission denied"):
        load_config(path)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("- data\n- model\n", "mapping of sections (data:, model:, train:, ...), not a list"),
        ("just words\n", "not a string"),
        ("data: 3\n", "data: should be a section"),
        ("model:\n  num_layers: two\n", "model.num_layers: Input should be a valid integer"),
        ("data:\n  corpus: [\n", "is not valid YAML"),
        ("a: 1\n b: 2\n", "at line 2, column 3"),
        ("train:\n  epochs: 3\nmodel: {}\ntrain:\n  lr: 0.1\n", "duplicate key 'train' at line 4"),
        ("train:\n  epochs: 3\n  epochs: 4\n", "duplicate key 'epochs' at line 3"),
    ],
    ids=["list", "scalar", "section-scalar", "wrong-type", "unclosed", "bad-indent",
         "twice-a-section", "twice-a-key"],
)  # fmt: skip
def test_params_file_of_the_wrong_shape(tmp_path, text, needle):
    (tmp_path / "params.yaml").write_text(text)
    one_line_error(run("clean", cwd=tmp_path), needle)


def test_empty_params_file_and_yaml_merge_keys_still_work(tmp_path):
    (tmp_path / "params.yaml").write_text("# all defaults\n")
    assert load_config(tmp_path / "params.yaml") == Config()
    merged = "model: &m {emb_dim: 8, hidden_dim: 8}\nx-unused: &t {epochs: 2}\n"
    (tmp_path / "params.yaml").write_text(merged)
    with pytest.raises(UserError, match="x-unused: unknown key"):
        load_config(tmp_path / "params.yaml")
    text = "base: &b {epochs: 2, lr: 0.1}\n"
    raw = yaml.load(text + "train:\n  <<: *b\n  lr: 0.5\n", Loader=config_mod._UniqueKeyLoader)
    assert raw["train"] == {"epochs": 2, "lr": 0.5}  # a merged key may be overridden


# ------------------------------------------------------------------------------------ paths
@pytest.mark.parametrize(
    ("paths", "needle"),
    [
        ({"paths.raw": "data"}, "paths.raw (data) and paths.clean (data/clean) overlap"),
        ({"paths.metrics": "data/raw/"}, "paths.raw (data/raw) and paths.metrics (data/raw)"),
        ({"paths.models": "."}, "paths.models='.' is the project folder itself"),
        ({"paths.prepared": ""}, "paths.prepared='.' is the project folder itself"),
    ],
)
def test_output_folders_may_not_overlap(paths, needle):
    with pytest.raises(UserError) as err:
        Config().with_overrides(paths)
    assert needle in str(err.value)


@pytest.mark.parametrize("command", ["download", "clean"])
def test_output_folder_that_is_a_file_is_left_alone(tmp_path, command):
    key = {"download": "raw", "clean": "clean"}[command]
    victim = tmp_path / "notes.txt"
    victim.write_text("keep me\n")
    res = run(command, "--params", PARAMS, "--set", f"paths.{key}=notes.txt", cwd=tmp_path)
    one_line_error(res, f"paths.{key}: notes.txt is a file, not a folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    assert victim.read_text() == "keep me\n"


def test_output_folder_that_is_the_current_folder(tmp_path):
    (tmp_path / "keep.txt").write_text("x")
    res = run("download", "--params", PARAMS, "--set", f"paths.raw={tmp_path}", cwd=tmp_path)
    one_line_error(res, f"paths.raw: {tmp_path} is the current folder or one above it")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


# ------------------------------------------------------------------------------------ --set
@pytest.mark.parametrize(
    ("item", "needle"),
    [
        ("train.epochs", "bad override 'train.epochs'"),
        ("=3", "bad override '=3'"),
        ("train.epochs=", "train.epochs: Input should be a valid integer (got an empty value)"),
        ("data=3", "data: should be a section"),
        ("train.epoch=3", "unknown config key 'train.epoch'"),
    ],
    ids=["no-equals", "no-key", "empty-value", "section", "typo"],
)
def test_bad_set(tmp_path, item, needle):
    one_line_error(run("clean", "--params", PARAMS, "--set", item, cwd=tmp_path), needle)


# ---------------------------------------------------------------------- mlflow.tracking_uri
@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_unknown_tracking_uri_scheme_is_refused_at_load(tmp_path, command):
    res = run(command, "--params", PARAMS, "--set", "mlflow.tracking_uri=foo://x", cwd=tmp_path)
    one_line_error(res, "mlflow.tracking_uri", "'foo'", "sqlite:///", "http(s)://")
    assert list(tmp_path.iterdir()) == []  # no mlflow.db, no ray_results


@pytest.mark.parametrize(
    "uri",
    [
        "mlruns", "/abs/mlruns", "file:/abs/mlruns", "file:///abs/mlruns", "sqlite:///mlflow.db",
        "sqlite:////abs/mlflow.db", "http://127.0.0.1:5000", "https://mlflow.example.org",
        "databricks", "databricks://profile", "postgresql://u:p@h/db",
        "postgresql+psycopg2://u@h/db", "mysql+pymysql://u@h/db", "mssql+pyodbc://u@h/db",
        "C:\\mlruns",
    ],
)  # fmt: skip
def test_accepted_tracking_uris(uri):
    assert Config().with_overrides({"mlflow.tracking_uri": uri}).mlflow.tracking_uri == uri


@pytest.mark.parametrize("uri", ["foo://x", "s3://bucket/mlruns", "postgres://h/db", "ftp://h"])
def test_refused_tracking_uris(uri):
    with pytest.raises(UserError, match="mlflow.tracking_uri: MLflow has no tracking store"):
        Config().with_overrides({"mlflow.tracking_uri": uri})


def test_tracking_uri_from_the_environment_is_checked_too():
    env = {"MLFLOW_TRACKING_URI": "foo://x"}
    with pytest.raises(UserError, match="environment variable MLFLOW_TRACKING_URI='foo://x'"):
        from_env("mlflow.tracking_uri", None, env)
    assert from_env("mlflow.tracking_uri", "sqlite:///a.db", env) == "sqlite:///a.db"
    assert from_env("mlflow.tracking_uri", None, {"MLFLOW_TRACKING_URI": "http://h"}) == "http://h"


# ----------------------------------------------------------------------- ray.storage_path
@pytest.mark.parametrize("command", ["train", "tune"])
def test_unknown_storage_scheme_is_refused_before_ray_starts(tmp_path, command):
    args = ["--set", "ray.storage_path=foo://bucket/runs"]
    res = run(command, "--params", PARAMS, *args, cwd=tmp_path)
    one_line_error(res, "ray.storage_path", "'foo'", "s3://")
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def no_network(monkeypatch):
    """Any name lookup or connection fails the test (config loading must stay offline)."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access during config loading: {args}")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.mark.parametrize(
    "path",
    ["ray_results", "/shared/ray_results", "s3://bucket/runs", "gs://bucket/runs",
     "hdfs://namenode:8020/runs", "file:///shared/ray_results", "abfs://c@acct/runs"],
)  # fmt: skip
def test_accepted_storage_paths_offline(no_network, path):
    assert Config().with_overrides({"ray.storage_path": path}).ray.storage_path == path
    check_storage_root("s3://bucket/runs")  # remote: left to Ray, no network here either


def test_storage_schemes_are_ones_pyarrow_knows():
    """The list is decided without pyarrow at load time; check it against pyarrow here for the
    schemes it resolves without network or a JVM."""
    import pyarrow.fs

    for scheme in ("file", "local"):
        pyarrow.fs.FileSystem.from_uri(f"{scheme}:///tmp")
    with pytest.raises(Exception, match="Unrecognized filesystem type"):
        pyarrow.fs.FileSystem.from_uri("foo://bucket/runs")
    assert "foo" not in config_mod.STORAGE_SCHEMES


def test_check_storage_root_creates_or_refuses_a_local_folder(tmp_path):
    check_storage_root(str(tmp_path / "a" / "b"))
    assert (tmp_path / "a" / "b").is_dir() and list((tmp_path / "a" / "b").iterdir()) == []
    check_storage_root(f"file://{tmp_path / 'c'}")
    assert (tmp_path / "c").is_dir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="ray.storage_path: .* exists and is not a folder"):
        check_storage_root(str(tmp_path / "file"))
    with pytest.raises(UserError, match=r"ray.storage_path: cannot write to .*file/sub"):
        check_storage_root(str(tmp_path / "file" / "sub"))


# ---------------------------------------------------------------------- tune.search_space
def test_search_space_value_out_of_range_is_refused_before_ray(tmp_path):
    space = "tune.search_space={model.num_layers: {choice: [0, 9]}}"
    res = run("tune", "--params", PARAMS, "--set", space, cwd=tmp_path)
    one_line_error(res, "tune.search_space.model.num_layers: choice 0", "greater than or equal")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("space", "needle"),
    [
        ({"model.num_layers": {"choice": [1, 9]}}, "choice 9 is not valid: Input should be less"),
        ({"model.num_layers": {"uniform": [1, 4]}}, "draws are fractional) is not valid"),
        ({"model.dropout": {"uniform": [0.0, 1.5]}}, "uniform high 1.5 is not valid"),
        ({"model.dropout": {"uniform": [-0.1, 0.5]}}, "uniform low -0.1 is not valid"),
        ({"train.lr": {"loguniform": [0, 0.1]}}, "loguniform: low must be above 0"),
        ({"train.lr": {"loguniform": [-1, 0.1]}}, "loguniform: low must be above 0"),
        ({"model.num_layers": {"randint": [1, 10]}}, "randint high 10 (exclusive) is not valid"),
        ({"train.optimizer": {"choice": ["adam", "rmsprop"]}}, "choice 'rmsprop' is not valid"),
        ({"data.target_lang": {"choice": ["de", "fr"]}}, "every trial of a sweep shares"),
        ({"data.reverse_source": {"grid": [True, 1.5]}}, "grid 1.5 is not valid"),
        ({"model.bogus": {"choice": [1]}}, "'model.bogus' is not a config key"),
        ({"tune.num_samples": {"choice": [1]}}, "'tune.num_samples' is not a config key"),
        ({"model.dropout": {"uniform": [0.3, 0.1]}}, "low must be below high"),
        ({"model.dropout": {"normal": [0, 1]}}, "unknown key"),
        ({"model.dropout": [0, 1]}, "give exactly one of {choice: [a, b, ...]}"),
        ({"model.dropout": {}}, "give exactly one of"),
        ({"model.dropout": {"choice": [0.1], "uniform": [0, 1]}}, "give exactly one of"),
        ({"model.dropout": {"choice": []}}, "choice: give at least one value"),
    ],
)
def test_search_space_values_checked_against_their_key(space, needle):
    with pytest.raises(UserError) as err:
        Config().with_overrides({"tune.search_space": space})
    assert needle in str(err.value)
    assert "tune.search_space" in str(err.value)


def test_search_spaces_at_the_edges_of_a_range_are_accepted():
    space = {
        "model.num_layers": {"randint": [1, 9]},  # high exclusive: 8 is the largest draw
        "model.dropout": {"uniform": [0.0, 1.0]},  # draws stay below 1.0
        "train.lr": {"loguniform": [1e-4, 1e-1]},
        "train.optimizer": {"choice": ["adam", "sgd"]},
        "train.lr_halving_start": {"choice": [None, 5]},
    }
    cfg = Config().with_overrides({"tune.search_space": space})
    assert set(cfg.tune.search_space) == set(space)


# -------------------------------------------------------------------------------- corpora
def files_args(folder: Path) -> list[str]:
    args = ["--params", PARAMS, "--set", "data.corpus=files"]
    for split in ("train", "valid", "test"):
        args += ["--set", f"data.files.{split}={folder}/{split}.{{lang}}"]
    return args


def write_corpus(folder: Path, lines: dict[str, list[str]] | None = None) -> None:
    folder.mkdir(exist_ok=True)
    for split in ("train", "valid", "test"):
        for lang in ("de", "en"):
            default = [f"Satz {i} {split}" if lang == "de" else f"sentence {i}" for i in range(4)]
            text = (lines or {}).get(f"{split}.{lang}", default)
            (folder / f"{split}.{lang}").write_text("".join(ln + "\n" for ln in text))


@pytest.fixture
def files_project(tmp_path) -> Path:
    """A project folder with data/raw from a small files corpus (the outputs to protect)."""
    write_corpus(tmp_path / "c")
    res = run("download", *files_args(tmp_path / "c"), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    return tmp_path


def test_files_corpus_all_empty_keeps_the_previous_download(files_project):
    before = snapshot(files_project / "data")
    write_corpus(files_project / "c", {f"{s}.{lang}": [] for s in ("train", "valid", "test")
                                       for lang in ("de", "en")})  # fmt: skip
    res = run("download", *files_args(files_project / "c"), cwd=files_project)
    one_line_error(res, "files: the train split is empty", "train.de", "at least one line pair")
    assert snapshot(files_project / "data") == before


def test_files_corpus_one_empty_split(files_project):
    before = snapshot(files_project / "data")
    write_corpus(files_project / "c", {"test.de": [], "test.en": []})
    res = run("download", *files_args(files_project / "c"), cwd=files_project)
    one_line_error(res, "the test split is empty")
    assert snapshot(files_project / "data") == before


def test_files_corpus_with_different_line_counts(files_project):
    before = snapshot(files_project / "data")
    write_corpus(files_project / "c", {"valid.en": ["only one line"]})
    res = run("download", *files_args(files_project / "c"), cwd=files_project)
    one_line_error(res, "parallel files differ in length", "valid.de has 4 lines", "has 1")
    assert snapshot(files_project / "data") == before


def test_a_split_emptied_by_cleaning_keeps_the_previous_clean_outputs(files_project):
    args = files_args(files_project / "c")
    assert run("clean", *args, cwd=files_project).returncode == 0
    before = snapshot(files_project / "data" / "clean")
    write_corpus(files_project / "c", {"valid.de": ["  ", "\t"], "valid.en": ["a", "b"]})
    assert run("download", *args, cwd=files_project).returncode == 0
    res = run("clean", *args, cwd=files_project)
    one_line_error(res, "no pairs of split 'valid' are left after cleaning", "'empty': 2")
    assert snapshot(files_project / "data" / "clean") == before


def test_tatoeba_file_without_tab_separated_columns(tmp_path):
    (tmp_path / "deu.txt").write_text("Hi.,Hallo.\nRun!,Lauf!\n")
    args = ["--set", "data.corpus=tatoeba", "--set", f"data.tatoeba.path={tmp_path}/deu.txt"]
    res = run("download", "--params", PARAMS, *args, cwd=tmp_path)
    one_line_error(res, "no line has the form english<TAB>translation")
    assert not (tmp_path / "data" / "raw").exists()


def test_multi30k_mirror_missing_a_file(tmp_path):
    (tmp_path / "mirror").mkdir()
    args = ["--set", "data.corpus=multi30k", "--set", f"data.mirror={tmp_path}/mirror"]
    res = run("download", "--params", PARAMS, *args, cwd=tmp_path)
    one_line_error(res, "mirror/", "does not exist", "mirror folder")
    assert not (tmp_path / "data" / "raw").exists()


# ------------------------------------------------------------------------------ translate
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """An untrained tiny checkpoint: enough for input handling."""
    import torch

    from seq2seq.checkpoint import save_checkpoint
    from seq2seq.model import Seq2Seq
    from seq2seq.text import Preprocessing
    from seq2seq.vocab import Vocab

    src, tgt = Vocab.from_tokens(["ein", "mann"]), Vocab.from_tokens(["a", "man"])
    torch.manual_seed(0)
    model = Seq2Seq(len(src), len(tgt), emb_dim=4, hidden_dim=4, num_layers=1, dropout=0.0)
    prep = Preprocessing("de", "en", lowercase=True, reverse_source=True, max_source_tokens=5)
    folder = tmp_path_factory.mktemp("ckpt") / "best"
    save_checkpoint(folder, model=model, epoch=1, preprocessing=prep, src_vocab=src, tgt_vocab=tgt)
    return folder


def test_translate_invalid_utf8_on_stdin(checkpoint, tmp_path):
    res = run("translate", "-c", str(checkpoint), cwd=tmp_path, stdin=b"ein mann\n\xff\xfe\x80\n")
    one_line_error(res, "standard input is not UTF-8 text", "at byte 9", "iconv")


def test_translate_invalid_utf8_file_and_argument(checkpoint, tmp_path):
    path = tmp_path / "in.txt"
    path.write_bytes("Größe\n".encode("latin-1"))
    res = run("translate", "-c", str(checkpoint), "-f", str(path), cwd=tmp_path)
    one_line_error(res, f"input file {path} is not UTF-8 text")
    res = subprocess.run(
        [*pipeline_cmd(), "translate", "-c", str(checkpoint), b"ein \xff mann"],
        cwd=tmp_path, capture_output=True, timeout=120,
    )  # fmt: skip
    one_line_error(res, "sentence argument 1 is not UTF-8 text")


def test_translate_file_that_is_a_folder_or_missing(checkpoint, tmp_path):
    one_line_error(run("translate", "-c", str(checkpoint), "-f", str(tmp_path), cwd=tmp_path),
                   "is a folder")  # fmt: skip
    res = run("translate", "-c", str(checkpoint), "-f", "nope.txt", cwd=tmp_path)
    one_line_error(res, "input file nope.txt does not exist")


def test_translate_utf8_with_bom_and_crlf_still_works(checkpoint, tmp_path):
    res = run(
        "translate", "-c", str(checkpoint), cwd=tmp_path, stdin=b"\xef\xbb\xbfein\r\nmann\r\n"
    )
    assert res.returncode == 0, res.stderr
    assert len(res.stdout.decode().splitlines()) == 2


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda p: (p / "checkpoint.pt").write_bytes(bytes(4096)), "is unreadable"),
        (lambda p: (p / "checkpoint.pt").write_bytes(b""), "is unreadable"),
        (lambda p: (p / "checkpoint.pt").write_text("hello"), "is unreadable"),
        (lambda p: None, "checkpoint.pt does not exist"),
    ],
    ids=["zeros", "empty", "text", "folder-without-checkpoint"],
)
def test_translate_bad_checkpoints(tmp_path, make, needle):
    folder = tmp_path / "models"
    folder.mkdir()
    make(folder)
    one_line_error(run("translate", "-c", str(folder), "x", cwd=tmp_path), needle)


def test_evaluate_checkpoint_of_zeros(tmp_path):
    (tmp_path / "zeros.pt").write_bytes(bytes(4096))
    res = run("evaluate", "--params", PARAMS, "--checkpoint", "zeros.pt", cwd=tmp_path)
    one_line_error(res, "checkpoint zeros.pt is unreadable")
    assert list(tmp_path.iterdir()) == [tmp_path / "zeros.pt"]  # no metrics, no mlflow.db


# ------------------------------------------------------------- unreachable cluster and server
def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def prepared_project(tmp_path: Path) -> Path:
    """Prepared data, tiny params, and an earlier FINISHED MLflow run of the same config."""
    from conftest import make_prepared, tiny_params
    from mlflow.tracking import MlflowClient

    from pipeline import runs, tracking

    make_prepared(tmp_path / "prep")
    params = tiny_params(tmp_path / "prep", train__num_workers=1)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    cfg = Config.model_validate(params)
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    client.search_experiments(max_results=1)
    exp = tracking.ensure_experiment(client, tracking.experiment_name(cfg))
    key = runs.run_key(cfg, (tmp_path / "prep").resolve())
    run_id = tracking.open_run(client, exp, key, name=key, tags={})
    tracking.close_run(client, run_id)
    return tmp_path


def _earlier_run_status(root: Path) -> list[str]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    exps = client.search_experiments()
    return [r.info.status for r in client.search_runs([e.experiment_id for e in exps])]


def test_unreachable_ray_address_is_refused_in_seconds_and_touches_no_run(prepared_project):
    address = f"127.0.0.1:{_closed_port()}"
    res = run("train", "--set", f"ray.address={address}", cwd=prepared_project)
    one_line_error(res, f"no Ray cluster answers at ray.address {address}", "RAY_ADDRESS")
    assert _earlier_run_status(prepared_project) == ["FINISHED"]  # not reopened, not failed


def test_unreachable_tracking_server_is_refused_in_seconds(prepared_project):
    uri = f"http://127.0.0.1:{_closed_port()}"
    for command in ("train", "tune"):
        res = run(command, "--set", f"mlflow.tracking_uri={uri}", cwd=prepared_project)
        one_line_error(res, f"the MLflow tracking server {uri} is not reachable")
    assert not (prepared_project / "ray_results").exists()
