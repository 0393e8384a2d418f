"""Configuration: defaults, YAML, overrides, validation with clear messages."""

import pytest

from robustdistill.config import load_config
from robustdistill.errors import ConfigError


def test_eps_defaults_follow_the_dataset():
    assert load_config(flags={"data": "fashion-mnist"}).eps == pytest.approx(0.1)
    assert load_config(flags={"data": "cifar10"}).eps == pytest.approx(8 / 255)


def test_priority_file_then_overrides_then_flags(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("epochs: 3\nlr: 0.05\nmethod_opts:\n  tau: 10\n")
    cfg = load_config(path, ["epochs=4", "method_opts.alpha=0.5"], {"epochs": 5, "method_opts": {"beta": 2}})
    assert cfg.epochs == 5
    assert cfg.lr == pytest.approx(0.05)
    assert cfg.method_opts == {"tau": 10, "alpha": 0.5, "beta": 2}


def test_unknown_key_suggests_the_closest():
    with pytest.raises(ConfigError, match="Did you mean 'epochs'"):
        load_config(overrides=["epochz=3"])


def test_unknown_yaml_key_is_refused(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("batchsize: 64\n")
    with pytest.raises(ConfigError, match="batch_size"):
        load_config(path)


@pytest.mark.parametrize(
    "override, key",
    [
        ("eps=0", "eps"),
        ("eps=-1", "eps"),
        ("steps=0", "steps"),
        ("epochs=0", "epochs"),
        ("lr=abc", "lr"),
        ("schedule=linear", "schedule"),
        ("milestones=[0.7,0.5]", "milestones"),
    ],
)
def test_invalid_values_name_the_key(override, key):
    with pytest.raises(ConfigError, match=f"'{key}'") as info:
        load_config(overrides=[override])
    assert "\n" not in str(info.value)


def test_malformed_yaml_is_one_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("epochs: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


def test_round_trip_through_yaml(tmp_path):
    cfg = load_config(flags={"epochs": 2, "method": "TRADES", "method_opts": {"beta": 3.0}})
    assert cfg.method == "trades"
    path = tmp_path / "config.yaml"
    path.write_text(cfg.to_yaml())
    assert load_config(path) == cfg


def test_milestones_as_fractions_or_epochs():
    assert load_config(flags={"epochs": 100, "milestones": [0.5, 0.75]}).milestone_epochs() == [50, 75]
    assert load_config(flags={"epochs": 200, "milestones": [100, 150]}).milestone_epochs() == [100, 150]


def test_config_yaml_of_runs_before_and_after_method_options_both_load(tmp_path):
    old = load_config(flags={"method": "ard", "method_opts": {"tau": 10}})
    path = tmp_path / "config.yaml"
    path.write_text(old.to_yaml().replace("method_options: null\n", ""))  # a run of an earlier version
    assert "method_options" not in path.read_text() and load_config(path).method_options is None
    recorded = {"tau": 10.0, "alpha": 1.0, "eps": 0.1, "step_size": None, "steps": 10, "norm": "linf", "reuse_steps": 0}
    new = old.model_copy(update={"method_options": recorded})
    path.write_text(new.to_yaml())
    assert load_config(path) == new and load_config(path).method_options == recorded


def test_the_run_eps_is_the_method_eps():
    from robustdistill import methods

    cfg = load_config(flags={"data": "fashion-mnist", "method": "trades", "steps": 3})
    options = methods.resolve_run_options(cfg.method, cfg.method_opts, cfg.attack_options())
    assert (options.attack.eps, options.attack.steps) == (cfg.eps, 3) == (pytest.approx(0.1), 3)
    bad = load_config(flags={"data": "fashion-mnist", "method": "trades", "method_opts": {"eps": 0.3}})
    with pytest.raises(ConfigError, match="'eps' is a setting of the run"):
        methods.resolve_run_options(bad.method, bad.method_opts, bad.attack_options())
