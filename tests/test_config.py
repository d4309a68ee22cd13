from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.config import Config, flatten, load_config
from pipeline.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


def test_params_yaml_matches_the_defaults_and_every_key_is_commented():
    cfg = load_config(ROOT / "params.yaml")
    assert cfg == Config()
    lines = (ROOT / "params.yaml").read_text().splitlines()
    keyed = [ln for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    uncommented = [ln for ln in keyed if "#" not in ln and not ln.rstrip().endswith(":")]
    assert uncommented == []


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("data.min_freq=0", "data.min_freq"),
        ("data.max_len=-1", "data.max_len"),
        ("data.reverse_source=maybe", "data.reverse_source"),
        ("data.corpus=wiki", "'sample', 'multi30k', 'tatoeba' or 'files'"),
        ("train.epochs=abc", "train.epochs"),
        ("data.target_lang=de", "choose two different languages"),
        ("data.bogus=1", "unknown config key 'data.bogus'"),
        ("nosuch.key=1", "'nosuch' is not a section"),
    ],
)
def test_bad_overrides_name_the_key(override, needle):
    with pytest.raises(UserError) as err:
        load_config(ROOT / "params.yaml", [override])
    assert needle in str(err.value)


def test_unknown_key_in_file_is_rejected_with_its_path(tmp_path):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["model"]["hiden_dim"] = 3
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(raw))
    with pytest.raises(UserError, match=r"model\.hiden_dim: unknown key"):
        load_config(p)


def test_overrides_parse_yaml_values_and_config_is_frozen():
    cfg = load_config(ROOT / "params.yaml", ["train.lr=3e-4", "data.reverse_source=false"])
    assert cfg.train.lr == pytest.approx(3e-4)
    assert cfg.data.reverse_source is False
    with pytest.raises(Exception):  # noqa: B017 - pydantic raises ValidationError on frozen
        cfg.train.lr = 1.0  # type: ignore[misc]


def test_search_space_must_name_real_keys():
    with pytest.raises(UserError, match="model.bogus"):
        Config().with_overrides({"tune.search_space": {"model.bogus": {"choice": [1]}}})
    flat = flatten(Config().model_dump())
    assert "model.dropout" in flat and "tune.search_space" in flat


def test_missing_params_file_is_an_error_and_an_empty_one_means_defaults(tmp_path):
    with pytest.raises(UserError, match="absent.yaml does not exist"):
        load_config(tmp_path / "absent.yaml")
    (tmp_path / "empty.yaml").write_text("# nothing set\n")
    assert load_config(tmp_path / "empty.yaml") == Config()


def test_one_env_rule_params_win_env_fills_nulls():
    from pipeline.config import ENV_FALLBACKS, from_env

    env = {var: f"from-env-{var}" for var in ENV_FALLBACKS.values()}
    for key, var in ENV_FALLBACKS.items():
        assert from_env(key, "from-params", env) == "from-params"
        assert from_env(key, None, env) == f"from-env-{var}"
        assert from_env(key, None, {}) is None
