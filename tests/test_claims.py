"""pipeline claim: the paper's claims as grid sweeps of equal-budget runs (issue 11 §1).

Unit: grid search spaces, the per-trial source order, the claim config, the summary; slow: a
real `pipeline claim reversal` on Ray with MLflow (both arms trained in one sweep, scored on
test, logged to their child runs, the main outputs untouched)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml
from conftest import make_prepared, pipeline_cmd, tiny_params

from pipeline import prepared
from pipeline.config import Config
from pipeline.errors import UserError
from pipeline.stages import claims, tune
from seq2seq.batching import ParallelCorpus


# ----------------------------------------------------------------------- grid and FIFO
def test_grid_runs_every_value_times_the_other_grids() -> None:
    from ray.tune.search.sample import Categorical

    cfg = Config().with_overrides(
        {
            "tune.num_samples": 2,
            "tune.search_space": {
                "model.num_layers": {"grid": [1, 2, 4]},
                "train.seed": {"grid": [1, 2]},
                "model.dropout": {"choice": [0.1, 0.2]},
            },
        }
    )
    assert cfg.tune.trials == 2 * 3 * 2
    space = tune.search_space(cfg)
    assert space["model.num_layers"] == {"grid_search": [1, 2, 4]}
    assert isinstance(space["model.dropout"], Categorical)
    assert Config().tune.trials == Config().tune.num_samples  # no grid: as before


def test_grid_values_are_checked_like_choices() -> None:
    with pytest.raises(UserError, match="grid 0"):
        Config().with_overrides({"tune.search_space": {"model.num_layers": {"grid": [1, 0]}}})
    with pytest.raises(UserError, match="grid: give at least one value"):
        Config().with_overrides({"tune.search_space": {"model.num_layers": {"grid": []}}})


def test_only_the_source_order_may_vary_among_data_keys() -> None:
    ok = Config().with_overrides(
        {"tune.search_space": {"data.reverse_source": {"grid": [True, False]}}}
    )
    assert ok.tune.search_space["data.reverse_source"].grid == [True, False]
    for key, dist in (("data.max_len", {"choice": [20, 30]}), ("paths.models", {"grid": ["a"]})):
        with pytest.raises(UserError, match="dvc exp run -S"):
            Config().with_overrides({"tune.search_space": {key: dist}})


def test_scheduler_is_asha_or_fifo() -> None:
    assert Config().tune.scheduler == "asha"
    assert Config().with_overrides({"tune.scheduler": "fifo"}).tune.scheduler == "fifo"
    with pytest.raises(UserError):
        Config().with_overrides({"tune.scheduler": "hyperband"})


# ------------------------------------------------------------------- source order per run
def test_reversed_sources_flip_each_row_and_keep_targets() -> None:
    corpus = ParallelCorpus.from_lists([[4, 5, 6], [7], [8, 9]], [[10], [11, 12], [13]])
    flipped = corpus.with_reversed_sources()
    rows = [
        flipped.src_flat[flipped.src_off[i] : flipped.src_off[i + 1]].tolist() for i in range(3)
    ]
    assert rows == [[6, 5, 4], [7], [9, 8]]
    assert np.array_equal(flipped.tgt_flat, corpus.tgt_flat)
    again = flipped.with_reversed_sources()
    assert np.array_equal(again.src_flat, corpus.src_flat)


def test_read_split_and_frame_give_the_asked_order(tmp_path: Path) -> None:
    folder = make_prepared(tmp_path / "prepared")  # written reversed
    stored = pl.read_parquet(folder / "test.parquet")["src_ids"].to_list()
    natural = prepared.read_frame(folder, "test", False, columns=["src", "src_ids"])
    assert natural["src_ids"].to_list() == [s[::-1] for s in stored]
    same = prepared.read_frame(folder, "test", True, columns=["src_ids"])
    assert same["src_ids"].to_list() == stored
    corpus = prepared.read_split(folder, "test", False)
    assert corpus.src_flat[: corpus.src_off[1]].tolist() == stored[0][::-1]
    meta = prepared.run_preprocessing(folder, False)
    assert meta.reverse_source is False and prepared.prepared_meta(folder).reverse_source is True


# ------------------------------------------------------------------------------ the claim
def test_claim_config_is_a_fifo_grid_of_arms_and_seeds() -> None:
    cfg = claims.claim_config(Config(), "depth", seeds=2)
    space = cfg.tune.search_space
    assert set(space) == {"model.num_layers", "train.seed"}  # nothing else drawn
    assert space["model.num_layers"].grid == [1, 2, 4] and space["train.seed"].grid == [1, 2]
    assert cfg.tune.scheduler == "fifo" and cfg.tune.trials == 6 and cfg.tune.export_top == 6
    assert cfg.paths.models == "claims/depth/models" and cfg.paths.metrics == "claims/depth/metrics"
    assert cfg.mlflow.experiment == "seq2seq-sample-de-en-claims"
    with pytest.raises(UserError, match="unknown claim 'width'"):
        claims.claim_config(Config(), "width", seeds=2)


def _row(value: object, seed: int, bleu: float, ppl: float, by_len: list) -> dict:
    pairs = zip(("1-10", "11+"), by_len, strict=True)
    buckets = [{"bucket": b, "n": 1, "bleu": v} for b, v in pairs]
    ranks = [{"bucket": "1-5", "n": 1, "bleu": bleu + 1}, {"bucket": "6-99", "n": 1, "bleu": bleu}]
    return {
        "value": value,
        "seed": seed,
        "test_bleu": bleu,
        "test_bleu_greedy": bleu - 1,
        "test_chrf": 50.0,
        "test_ppl": ppl,
        "by_length": buckets,
        "by_rank": ranks,
    }


def test_summary_means_and_spread_per_arm_in_the_claims_order() -> None:
    c = claims.CLAIMS["depth"]
    rows = [
        _row(2, 1, 20.0, 9.0, [30.0, 10.0]),
        _row(1, 1, 10.0, 10.0, [20.0, None]),
        _row(1, 2, 14.0, 12.0, [24.0, 6.0]),
        _row(2, 2, 22.0, 9.0, [32.0, 12.0]),
    ]
    s = claims.summarise(c, rows)
    assert [a["arm"] for a in s["arms"]] == ["num_layers=1", "num_layers=2"]  # 4 never ran
    one = s["arms"][0]
    assert one["runs"] == 2 and one["test_bleu"] == {"mean": 12.0, "min": 10.0, "max": 14.0}
    assert [b["bleu"] for b in one["by_length"]] == [22.0, 6.0]  # a missing bucket is skipped
    assert [(b["bucket"], b["bleu"]) for b in one["by_rank"]] == [("1-5", 13.0), ("6-99", 12.0)]
    assert s["ppl_change_per_layer"] == [{"from": 1, "to": 2, "change": round(9 / 11 - 1, 4)}]
    table = claims.markdown(c, s)
    assert "| num_layers=1 | 2 | 12.00 (10.00-14.00) |" in table
    assert "1 -> 2 layers: test perplexity -18.2%" in table


def test_unknown_claim_is_one_line_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text("{}\n")
    proc = subprocess.run(
        pipeline_cmd() + ["claim", "width"], cwd=tmp_path, capture_output=True, text=True
    )
    assert proc.returncode == 2
    out = proc.stdout + proc.stderr
    assert "unknown claim 'width'" in out and "reversal, depth, teacher-forcing" in out
    assert "Traceback" not in out


def test_rescore_without_trained_runs_is_one_line_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text("{}\n")
    proc = subprocess.run(
        pipeline_cmd() + ["claim", "depth", "--rescore"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "Traceback" not in out, out
    assert "claim depth has no trained runs to score" in out
    assert "run `pipeline claim depth` (without --rescore) first" in out
    assert not (tmp_path / "claims").exists()


# ----------------------------------------------------------------------------------- slow
@pytest.mark.slow
def test_reversal_claim_trains_both_orders_in_one_sweep(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from seq2seq.checkpoint import load_checkpoint

    make_prepared(tmp_path / "prepared")
    params = tiny_params(tmp_path / "prepared", train__num_workers=1, train__epochs=1)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    proc = subprocess.run(
        pipeline_cmd() + ["claim", "reversal", "--seeds", "1"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=500,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "claims" / "reversal" / "metrics"
    rows = json.loads((out / "runs.json").read_text())
    assert [(r["arm"], r["seed"]) for r in rows] == [
        ("reverse_source=true", 1),
        ("reverse_source=false", 1),
    ]
    summary = json.loads((out / "summary.json").read_text())
    assert [a["runs"] for a in summary["arms"]] == [1, 1] and summary["epochs"] == 1
    assert "| reverse_source=false | 1 |" in (out / "summary.md").read_text()
    assert (out / "bleu_by_length.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "figure3.png").read_bytes()[:4] == b"\x89PNG"
    # both orders are scored on the same sources: the same rank groups
    groups = [[(b["lo"], b["hi"], b["n"]) for b in r["by_rank"]] for r in rows]
    assert groups[0] == groups[1] and sum(n for _, _, n in groups[0]) == rows[0]["sentences"]
    # each arm's checkpoint says its order, so translate/evaluate feed it the right one
    top = tmp_path / "claims" / "reversal" / "models" / "top"
    members = json.loads((top / "members.json").read_text())
    for m in members:
        ckpt = load_checkpoint(top / str(m["rank"]))
        assert ckpt.preprocessing.reverse_source is m["params"]["data.reverse_source"]
    # MLflow: one parent with the claim's files, a child per run with its test scores
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("seq2seq-sample-de-en-claims")
    found = client.search_runs([exp.experiment_id])
    children = [r for r in found if "mlflow.parentRunId" in r.data.tags]
    parents = [r for r in found if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and len(children) == 2
    assert parents[0].data.tags["claim"] == "reversal"
    assert parents[0].info.status == "FINISHED"
    files = {a.path for a in client.list_artifacts(parents[0].info.run_id, "claim")}
    assert {"claim/summary.md", "claim/bleu_by_length.png", "claim/figure3.png"} <= files
    by_run = {r["mlflow_run_id"]: r for r in rows}
    for child in children:
        row = by_run[child.info.run_id]
        assert child.data.tags["arm"] == row["arm"] and child.data.tags["claim"] == "reversal"
        assert child.data.metrics["test_bleu"] == pytest.approx(row["test_bleu"])
        assert child.data.metrics["test_ppl"] == pytest.approx(row["test_ppl"])
        groups = [g["bleu"] for g in row["by_rank"]]
        ranks = [child.data.metrics.get(f"test_bleu_rank_{i}") for i in range(1, 6)]
        assert len(groups) == 5 and ranks == pytest.approx(groups)  # evaluate.rank_bins
    # the claim is not the pipeline's model: nothing registered, models/ and metrics/ untouched
    assert client.search_registered_models() == []
    assert not (tmp_path / "models").exists() and not (tmp_path / "metrics").exists()
    # --rescore scores the same checkpoints again: the same results, no new run, no training
    (out / "figure3.png").unlink()
    again = subprocess.run(
        pipeline_cmd() + ["claim", "reversal", "--rescore"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    assert "nothing is trained" in again.stdout + again.stderr
    assert json.loads((out / "runs.json").read_text()) == rows
    assert (out / "figure3.png").is_file()
    assert json.loads((out / "summary.json").read_text())["sweep"] == summary["sweep"]
    assert len(client.search_runs([exp.experiment_id])) == 3
