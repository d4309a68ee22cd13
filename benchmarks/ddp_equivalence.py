"""DDP equivalence: a 2-worker and a 1-worker Ray Train run with the same GLOBAL batch reach the
same validation loss (within 2%) after 2 epochs. Prints one JSON line.

    .venv/bin/python benchmarks/ddp_equivalence.py [--prepared data/prepared] [--epochs 2]

Dropout 0 and teacher forcing 1.0 remove the per-rank randomness, so what remains is the data
sharding and gradient averaging that DDP must get right.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline import raycluster  # noqa: E402
from pipeline.config import Config  # noqa: E402
from pipeline.runs import build_trainer, check_prepared  # noqa: E402


def run(cfg: Config, workers: int, storage: str) -> tuple[float, float]:
    """(final val_loss, seconds) of one Train run with `workers` CPU workers."""
    cfg = cfg.with_overrides({"train.num_workers": workers})
    start = time.perf_counter()
    trainer = build_trainer(
        cfg, check_prepared(cfg), name=f"ddp-eq-{workers}w", storage=storage, gpu=False,
        callbacks=[], verbose=False,
    )  # fmt: skip
    result = trainer.fit()
    return float(result.metrics["val_loss"]), time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--prepared", default="data/prepared")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args()
    cfg = Config().with_overrides(
        {
            "paths.prepared": args.prepared,
            "model.emb_dim": 32, "model.hidden_dim": 64, "model.num_layers": 1,
            "model.dropout": 0.0, "train.teacher_forcing": 1.0, "train.epochs": args.epochs,
            "train.batch_size": args.batch_size, "train.bf16": "off", "ray.num_cpus": 2,
        }
    )  # fmt: skip
    raycluster.prepare_env(cfg, verbose=False)
    raycluster.init(cfg)
    try:
        with tempfile.TemporaryDirectory() as storage:
            loss1, sec1 = run(cfg, 1, storage)
            loss2, sec2 = run(cfg, 2, storage)
    finally:
        raycluster.shutdown()
    rel = abs(loss2 - loss1) / loss1
    out = {
        "benchmark": "ddp_equivalence", "epochs": args.epochs, "global_batch": args.batch_size,
        "val_loss_1_worker": round(loss1, 5), "val_loss_2_workers": round(loss2, 5),
        "relative_difference": round(rel, 5), "within_2_percent": rel <= 0.02,
        "seconds_1_worker": round(sec1, 1), "seconds_2_workers": round(sec2, 1),
    }  # fmt: skip
    print(json.dumps(out))


if __name__ == "__main__":
    main()
