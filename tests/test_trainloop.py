"""pipeline.trainloop: the Ray Train adapter's pieces (fault hook, seeding, throughput, config),
plus `make_prepared`, a tiny training-ready folder used by the Ray tests too."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import make_prepared

from pipeline import trainloop
from pipeline.config import Config


def test_make_prepared_round_trips(tmp_path: Path) -> None:
    from seq2seq.batching import ParallelCorpus

    folder = make_prepared(tmp_path / "prep")
    corpus = ParallelCorpus.from_parquet(folder / "train.parquet")
    assert len(corpus) == 192


def test_loop_config_has_absolute_path_and_no_fault(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(trainloop.FAULT_EPOCH_ENV, raising=False)
    cfg = Config()
    out = trainloop.loop_config(cfg, "data/prepared")
    assert Path(out["prepared"]).is_absolute()
    assert out["fault"] is None
    assert Config.model_validate(out["cfg"]) == cfg  # the tree survives the round trip


def test_fault_hook_fires_once_on_last_rank(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "fault.marker"
    monkeypatch.setenv(trainloop.FAULT_EPOCH_ENV, "2")
    monkeypatch.setenv(trainloop.FAULT_MARKER_ENV, str(marker))
    fault = trainloop.loop_config(Config(), str(tmp_path))["fault"]
    assert fault == (2, str(marker))
    trainloop._maybe_fault(fault, epoch=1, rank=1, world=2)  # wrong epoch
    trainloop._maybe_fault(fault, epoch=2, rank=0, world=2)  # not the last rank
    assert not marker.exists()
    with pytest.raises(trainloop.InjectedFault):
        trainloop._maybe_fault(fault, epoch=2, rank=1, world=2)
    assert marker.exists()
    trainloop._maybe_fault(fault, epoch=2, rank=1, world=2)  # already fired: no raise


def test_global_stats_single_process() -> None:
    assert trainloop._global_stats(2.5, 1000, 2.0) == pytest.approx((2.5, 500.0))


@pytest.mark.parametrize(
    ("key", "value", "shown"),
    [("data.reverse_source", False, "true"), ("data.lowercase", False, "true"),
     ("data.source_lang", "fr", "de")],
)  # fmt: skip
def test_config_that_disagrees_with_the_prepared_data_is_refused(tmp_path, key, value, shown):
    from pipeline.errors import UserError
    from pipeline.runs import check_prepared

    folder = make_prepared(tmp_path / "prep")
    cfg = Config().with_overrides({"paths.prepared": str(folder)})
    assert check_prepared(cfg) == folder.resolve()
    with pytest.raises(UserError, match=f"prepared with {key}={shown}, but the config says"):
        check_prepared(cfg.with_overrides({key: value}))


def test_prepared_data_without_meta_is_refused(tmp_path):
    from pipeline.errors import UserError
    from pipeline.runs import check_prepared

    folder = make_prepared(tmp_path / "prep")
    (folder / "meta.json").unlink()
    with pytest.raises(UserError, match="meta.json is missing"):
        check_prepared(Config().with_overrides({"paths.prepared": str(folder)}))
