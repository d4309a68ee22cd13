"""`dvc exp show` lists what a user compares, with no flags: test BLEU, chrF and perplexity
(metrics/eval.json, dvc.yaml's top-level `metrics:`) and the swept params (params.yaml keys the
stages read). A temporary copy of the project gets fabricated stage outputs recorded with
`dvc commit` as its baseline, then one experiment saved with other params and scores
(`dvc exp save`): no stage runs, so this takes seconds."""

from __future__ import annotations

import csv
import io
import json

import pytest
import yaml
from dvcrepo import dvc, fabricate_outputs, project_copy, sh

BASE = {"test_bleu": 21.5, "test_bleu_greedy": 20.25, "test_chrf": 40.5, "test_ppl": 8.25}
EXP = {"test_bleu": 25.0, "test_bleu_greedy": 23.5, "test_chrf": 44.0, "test_ppl": 6.5}
NEW = {"model.num_layers": 3, "model.dropout": 0.125, "train.teacher_forcing": 0.625}  # swept
COMPARED = ["test_bleu", "test_chrf", "test_ppl", *NEW]


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("exp")
    home = root / "home"
    proj = project_copy(root / "proj", home)
    params = yaml.safe_load((proj / "params.yaml").read_text())
    base = {k: params[k.split(".")[0]][k.split(".")[1]] for k in NEW}
    assert all(base[k] != NEW[k] for k in NEW), base
    fabricate_outputs(proj, home, BASE)
    sh(["git", "add", "dvc.lock"], proj, home)
    sh(["git", "commit", "-qm", "baseline results"], proj, home)
    for key, value in NEW.items():
        section, name = key.split(".")
        params[section][name] = value
    (proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    fabricate_outputs(proj, home, EXP, seed=1)
    dvc(["exp", "save", "-n", "tiny-exp"], proj, home)
    return proj, home, base


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def test_exp_show_json_has_scores_and_swept_params_of_the_experiment(repo):
    proj, home, base_params = repo
    shown = json.loads(dvc(["exp", "show", "--json"], proj, home))
    base = next(r for r in shown if r["rev"] != "workspace")
    (exp,) = [e for e in base["experiments"] for e in e["revs"] if e["name"] == "tiny-exp"]
    for row, metrics, values in ((base, BASE, base_params), (exp, EXP, NEW)):
        data = row["data"]
        assert data["metrics"]["metrics/eval.json"]["data"] == metrics
        params = _flat(data["params"]["params.yaml"]["data"])
        assert {k: params[k] for k in NEW} == values


def test_exp_show_default_columns_put_scores_first_and_include_swept_params(repo):
    proj, home, _ = repo
    rows = list(csv.DictReader(io.StringIO(dvc(["exp", "show", "--csv"], proj, home))))
    header = list(rows[0])
    assert all(col in header for col in COMPARED), header
    first_param = min(header.index(k) for k in NEW)
    assert max(header.index(m) for m in ("test_bleu", "test_chrf", "test_ppl")) < first_param
    (exp,) = [r for r in rows if r["Experiment"] == "tiny-exp"]
    assert float(exp["test_bleu"]) == EXP["test_bleu"]
    assert float(exp["model.dropout"]) == NEW["model.dropout"]


def test_only_changed_and_exp_diff_narrow_to_what_differs(repo):
    proj, home, _ = repo
    table = dvc(["exp", "show", "--csv", "--only-changed"], proj, home)
    header = next(csv.reader(io.StringIO(table)))
    assert set(COMPARED) <= set(header) and "data.corpus" not in header
    diff = json.loads(dvc(["exp", "diff", "HEAD", "tiny-exp", "--json"], proj, home))
    assert set(diff["params"]["params.yaml"]) == set(NEW)
    assert diff["metrics"]["metrics/eval.json"]["test_bleu"]["diff"] == pytest.approx(3.5)
