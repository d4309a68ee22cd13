"""`pipeline claim NAME`: one of the paper's claims as a sweep of equal-budget runs.

Sutskever et al. (2014) claim that reversing the source helps (most on long sentences), that
each added LSTM layer cuts perplexity by nearly 10%, and they train with teacher forcing. Each
claim here is one command that trains every arm with `--seeds` seeds (train.seed 1..S) as one
Ray Tune sweep (`pipeline.stages.tune`):

- `tune.search_space` is a grid of the arm key and train.seed, nothing else drawn: the arms
  differ in that key only, the rest is the base config (params.yaml, a profile, --set);
- `tune.scheduler: fifo`: no early stopping, every run trains `train.epochs` epochs (the equal
  budget), as many at a time as the cluster fits;
- `--rescore` scores the runs of an earlier sweep again, training nothing;
- the reversal arms share one prepared data folder: a natural-order trial reverses the prepared
  sources back (`pipeline.prepared.read_split`), so `dvc repro reverse` once is enough.

MLflow: the experiment `<experiment>-claims` holds one parent run per claim sweep (tag
`claim`) with a child run per arm and seed (tags `claim`, `arm`); select the children and
Compare. After the sweep, each run's best checkpoint (by tune.metric on validation) is scored on
the test split: BLEU (beam and greedy), chrF, teacher-forced perplexity, BLEU by source length
and by average word-frequency rank, logged to its child run as `test_*` metrics
(`test_bleu_len_<bucket>`, `test_bleu_rank_<group>` with group 1 the commonest words). The outputs,
under `claims/NAME/models` (checkpoints, trials, curves) and `claims/NAME/metrics` (outside
DVC's outputs, so `dvc repro` does not see them as changed):
`runs.json` (every run's scores), `summary.json` and `summary.md` (per arm: mean, min and max
over seeds; for depth also the perplexity change per added layer), `bleu_by_length.png` (one
line per arm) and `figure3.png` (the paper's Figure 3: by source length and by average
word-frequency rank, one line per arm). The main pipeline's models/ and metrics/ are not
touched."""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pipeline import ensembles, figures, tracking
from pipeline.config import Config
from pipeline.errors import UserError
from pipeline.ui import info
from seq2seq.io import atomic_dir, write_json


@dataclass(frozen=True)
class Claim:
    key: str  # the config key the arms differ in
    arms: tuple[Any, ...]
    what: str  # the paper's claim, one line

    def label(self, value: Any) -> str:
        short = self.key.rsplit(".", 1)[-1]
        return f"{short}={str(value).lower() if isinstance(value, bool) else value}"


CLAIMS: dict[str, Claim] = {
    "reversal": Claim(
        "data.reverse_source",
        (True, False),
        "reversing the source helps, most on long sentences",
    ),
    "depth": Claim("model.num_layers", (1, 2, 4), "each added layer cuts perplexity by nearly 10%"),
    "teacher-forcing": Claim(
        "train.teacher_forcing", (0.0, 0.5, 1.0), "training on the reference prefix"
    ),
}
SUFFIX = "-claims"  # MLflow experiment: <experiment>-claims
CLAIMS_DIR = Path("claims")  # claims/NAME/{models,metrics}: outside DVC's outputs


def claim(name: str) -> Claim:
    if name not in CLAIMS:
        raise UserError(f"unknown claim {name!r}", fix=f"choose one of: {', '.join(CLAIMS)}")
    return CLAIMS[name]


def claim_config(cfg: Config, name: str, seeds: int) -> Config:
    """The sweep's config: the base with a grid of arms x seeds, FIFO, its own outputs and
    MLflow experiment; every run is exported (claims/NAME/models/top) to be scored."""
    c = claim(name)
    if seeds < 1:
        raise UserError(f"--seeds is {seeds}", fix="give at least 1 (2 or more to see the spread)")
    runs = len(c.arms) * seeds
    return cfg.with_overrides(
        {
            "tune.search_space": {
                c.key: {"grid": list(c.arms)},
                "train.seed": {"grid": list(range(1, seeds + 1))},
            },
            "tune.num_samples": 1,
            "tune.scheduler": "fifo",
            "tune.export_top": runs,
            "paths.models": str(CLAIMS_DIR / name / "models"),
            "paths.metrics": str(CLAIMS_DIR / name / "metrics"),
            "mlflow.experiment": tracking.experiment_name(cfg) + SUFFIX,
        }
    )


def run(
    cfg: Config, name: str, seeds: int = 2, verbose: bool = False, rescore: bool = False
) -> dict[str, Any]:
    """Train every arm x seed of claim `name`, score each on the test split, summarise;
    `rescore`: score the runs an earlier `pipeline claim NAME` trained again, training nothing
    (after a change to the evaluate settings or to what is scored)."""
    from pipeline.config import check_output_folder
    from pipeline.stages import tune

    c = claim(name)
    ccfg = claim_config(cfg, name, seeds)
    check_output_folder(ccfg.paths.metrics, "paths.metrics")
    if rescore:
        sweep, seeds, minutes = _trained(ccfg, name)
        info(f"claim {name}: scoring the runs of sweep {sweep} again (nothing is trained)")
    else:
        info(f"claim {name}: {c.what}; arms {', '.join(map(c.label, c.arms))} x {seeds} seed(s)")
        t0 = time.perf_counter()
        sweep = tune.run(ccfg, verbose=verbose, register=False)["sweep"]
        minutes = (time.perf_counter() - t0) / 60
    client = tracking.client_for(ccfg)
    rows = _score_runs(ccfg, name, client)
    summary = summarise(c, rows)
    summary.update(claim=name, what=c.what, seeds=seeds, sweep=sweep)
    summary.update(epochs=ccfg.train.epochs, sweep_minutes=round(minutes, 1))
    out = Path(ccfg.paths.metrics)
    with atomic_dir(out) as tmp:
        write_json(tmp / "runs.json", rows)
        write_json(tmp / "summary.json", summary)
        (tmp / "summary.md").write_text(markdown(c, summary), encoding="utf-8")
        series = {arm["arm"]: arm["by_length"] for arm in summary["arms"]}
        figures.bleu_by_length_series(
            series, tmp / figures.BLEU_BY_LENGTH_FILE, title=f"test BLEU by source length: {name}"
        )
        ranks = {arm["arm"]: arm["by_rank"] for arm in summary["arms"]}
        title = f"test BLEU by source length and word-frequency rank: {name}"
        figures.figure3(series, ranks, tmp / figures.FIGURE3_FILE, title=title)
    _log_parent(client, rows, name, out)
    info(markdown(c, summary))
    info(f"claim {name}: {out.resolve()}; MLflow experiment {ccfg.mlflow.experiment!r}")
    return summary


def _trained(cfg: Config, name: str) -> tuple[str, int, float]:
    """What an earlier run of claim `name` left to score again: its sweep's name, seeds per arm
    and training minutes (from its summary.json); a UserError when it left no models."""
    top = Path(cfg.paths.models) / ensembles.TOP_DIR / ensembles.MEMBERS_FILE
    if not top.is_file():
        raise UserError(
            f"claim {name} has no trained runs to score ({top} is missing)",
            fix=f"run `pipeline claim {name}` (without --rescore) first",
        )
    members = json.loads(top.read_text())
    seeds = len({m["params"]["train.seed"] for m in members})
    old = Path(cfg.paths.metrics) / "summary.json"
    summary = json.loads(old.read_text()) if old.is_file() else {}
    return str(summary.get("sweep", "?")), seeds, float(summary.get("sweep_minutes", 0.0))


def _score_runs(cfg: Config, name: str, client: Any) -> list[dict[str, Any]]:
    """Each exported run's best checkpoint on the test split, logged to its MLflow child run."""
    c = claim(name)
    import polars as pl

    from pipeline.stages.evaluate import score_test
    from seq2seq.metrics import perplexity

    models = Path(cfg.paths.models)
    members = json.loads((models / ensembles.TOP_DIR / ensembles.MEMBERS_FILE).read_text())
    trials = pl.read_csv(models / "trials.csv", infer_schema_length=0)
    run_of = dict(zip(trials["trial"], trials["mlflow_run_id"], strict=True))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = []
    for m in members:
        ckpt, model = ensembles.load([models / ensembles.TOP_DIR / str(m["rank"])], device)
        s = score_test(cfg, ckpt, model, device)
        value = m["params"][c.key]
        row = {
            "arm": c.label(value),
            "value": value,
            "seed": int(m["params"]["train.seed"]),
            "trial": m["trial"],
            "epoch": m["epoch"],
            "test_bleu": round(s["bleu"]["beam"].score, 4),
            "test_bleu_greedy": round(s["bleu"]["greedy"].score, 4),
            "test_chrf": round(s["chrf"][0], 4),
            "test_ppl": round(perplexity(s["loss"]), 4),
            "sentences": s["frame"].height,
            "by_length": s["by_length"],
            "by_rank": s["by_rank"],
            "mlflow_run_id": run_of.get(m["trial"]) or "",
        }
        info(
            f"{row['arm']} seed {row['seed']}: test BLEU {row['test_bleu']:.2f} "
            f"(greedy {row['test_bleu_greedy']:.2f}), ppl {row['test_ppl']:.2f}"
        )
        if row["mlflow_run_id"]:
            _log_child(client, row, name)
        rows.append(row)
    order = {c.label(v): i for i, v in enumerate(c.arms)}
    return sorted(rows, key=lambda r: (order[r["arm"]], r["seed"]))


def _log_child(client: Any, row: dict[str, Any], name: str) -> None:
    run_id = row["mlflow_run_id"]
    for key in ("test_bleu", "test_bleu_greedy", "test_chrf", "test_ppl"):
        client.log_metric(run_id, key, float(row[key]))
    for bucket in row["by_length"]:
        if bucket.get("bleu") is not None:
            client.log_metric(run_id, f"test_bleu_len_{bucket['bucket']}", float(bucket["bleu"]))
    for i, group in enumerate(row["by_rank"], start=1):  # 1: the commonest words
        client.log_metric(run_id, f"test_bleu_rank_{i}", float(group["bleu"]))
    tracking.set_tags(client, run_id, {"claim": name, "arm": row["arm"]})


def _log_parent(client: Any, rows: list[dict], name: str, out: Path) -> None:
    """The summary files on the sweep's parent run, which gets the tag `claim`."""
    if not rows or not rows[0]["mlflow_run_id"]:
        return
    parent = client.get_run(rows[0]["mlflow_run_id"]).data.tags.get("mlflow.parentRunId")
    if not parent:
        return
    tracking.set_tags(client, parent, {"claim": name})
    files = ("summary.json", "summary.md", "runs.json")
    for file in (*files, figures.BLEU_BY_LENGTH_FILE, figures.FIGURE3_FILE):
        client.log_artifact(parent, str(out / file), "claim")


def _spread(values: list[float]) -> dict[str, float]:
    return {
        "mean": round(statistics.fmean(values), 4),
        "min": round(min(values), 4),
        "max": round(max(values), 4),
    }


def _mean_buckets(runs: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Each bucket's BLEU as the mean over runs (the same buckets in each; empty ones skipped)."""
    buckets = []
    for i, b in enumerate(runs[0]):
        known = [r[i]["bleu"] for r in runs if r[i]["bleu"] is not None]
        buckets.append({**b, "bleu": round(statistics.fmean(known), 4) if known else None})
    return buckets


def summarise(c: Claim, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per arm (in the claim's order): the seeds' mean, min and max of each test metric, and
    the mean BLEU per source-length bucket; for depth, the perplexity change per added layer."""
    arms = []
    for value in c.arms:
        mine = [r for r in rows if r["value"] == value]
        if not mine:
            continue
        arm: dict[str, Any] = {"arm": c.label(value), "value": value, "runs": len(mine)}
        for key in ("test_bleu", "test_bleu_greedy", "test_chrf", "test_ppl"):
            arm[key] = _spread([r[key] for r in mine])
        for key in ("by_length", "by_rank"):
            arm[key] = _mean_buckets([r[key] for r in mine])
        arms.append(arm)
    summary: dict[str, Any] = {"key": c.key, "arms": arms}
    if c.key == "model.num_layers" and len(arms) > 1:
        summary["ppl_change_per_layer"] = [
            {
                "from": a["value"],
                "to": b["value"],
                "change": round(b["test_ppl"]["mean"] / a["test_ppl"]["mean"] - 1, 4),
            }
            for a, b in zip(arms, arms[1:], strict=False)
        ]
    return summary


def markdown(c: Claim, summary: dict[str, Any]) -> str:
    """The summary as a Markdown table: mean (min-max over seeds) per arm and metric."""

    def cell(s: dict[str, float]) -> str:
        return f"{s['mean']:.2f} ({s['min']:.2f}-{s['max']:.2f})"

    buckets = [b["bucket"] for b in summary["arms"][0]["by_length"]] if summary["arms"] else []
    head = ["arm", "runs", "BLEU beam", "BLEU greedy", "chrF", "test ppl"]
    head += [f"BLEU {b}" for b in buckets]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for arm in summary["arms"]:
        cells = [arm["arm"], str(arm["runs"])]
        cells += [cell(arm[k]) for k in ("test_bleu", "test_bleu_greedy", "test_chrf", "test_ppl")]
        cells += ["-" if b["bleu"] is None else f"{b['bleu']:.1f}" for b in arm["by_length"]]
        lines.append("| " + " | ".join(cells) + " |")
    for step in summary.get("ppl_change_per_layer", []):
        lines.append(
            f"\n{step['from']} -> {step['to']} layers: test perplexity {step['change']:+.1%}"
        )
    return "\n".join(lines) + "\n"
