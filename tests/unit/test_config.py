from pathlib import Path

import pytest

from replearn.experiment.plugins import resolve
from replearn.config.sections import Config, apply_overrides, config_from_dict, dump_yaml, load_config, load_yaml
from replearn.errors import ConfigError
from helpers import REPO_ROOT

ROOT = REPO_ROOT


def test_defaults_are_the_digits_experiment():
    assert resolve(load_config(ROOT / "experiments" / "digits.yaml")).config == resolve(Config()).config


def test_bundled_experiments_give_every_regime_the_same_budget():
    for name in ("digits", "fashion_mnist", "objectives"):
        cfg = load_config(ROOT / "experiments" / f"{name}.yaml")
        assert cfg.train.budget == "equal-steps", name
        plugins = resolve(cfg)
        assert {plugins.epochs_for(r) for r in plugins.regimes} == {cfg.train.epochs}, name
    assert load_config(ROOT / "experiments" / "fashion_mnist.yaml").data.name == "fashion-mnist"


def test_yaml_round_trip():
    cfg = load_config(None, ["train.epochs=3", "model.channels=[8, 16]", "analysis.probe_l2_grid=[0.1]"])
    import yaml
    assert config_from_dict(yaml.safe_load(dump_yaml(cfg))) == cfg
    assert cfg.train.epochs == 3 and cfg.model.plugin_options["channels"] == [8, 16]


def test_overrides_coerce_types():
    cfg = load_config(None, ["train.lr=1e-3", "train.probe_every_epoch=false", "train.seeds=4"])
    assert cfg.train.lr == pytest.approx(1e-3) and cfg.train.probe_every_epoch is False
    assert cfg.train.seeds == [4]


@pytest.mark.parametrize("override, fragment", [
    ("train.epoch=3", "did you mean 'train.epochs'"),
    ("modle.latent_dim=3", "did you mean 'model.latent_dim'"),
    ("train.epochs=three", "must be of type int"),
    ("train.epochs=-1", "must be >= 0"),
    ("train.batch_size=0", "must be >= 1"),
    ("train.lr=0", "must be > 0.0"),
    ("train.optimizer=adamm", "did you mean 'adam'"),
    ("model.kernel_size=4", "must be odd"),
    ("train.seeds=[1, 1]", "lists a seed twice"),
    ("name=a/b", "plain name"),
    ("train.lr=.nan", "must be finite"),
    ("epochs", "not of the form key=value"),
])
def test_bad_values_name_key_and_fix(override, fragment):
    with pytest.raises(ConfigError) as info:
        resolve(load_config(None, [override]))  # a plug-in's own keys (model.kernel_size) are checked by resolve
    line = info.value.one_line()
    assert fragment in line and "\n" not in line and "fix:" in line


def test_malformed_yaml_names_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  epochs: 3\n   batch_size: 4\n")
    with pytest.raises(ConfigError, match="not valid YAML at line 3"):
        load_yaml(path)


def test_non_mapping_section(tmp_path):
    with pytest.raises(ConfigError, match="section 'train' must be a mapping"):
        config_from_dict({"train": [1, 2]})


def test_apply_overrides_does_not_mutate_input():
    raw = {"train": {"epochs": 1}}
    merged = apply_overrides(raw, ["train.epochs=5"])
    assert raw["train"]["epochs"] == 1 and merged["train"]["epochs"] == 5


def test_bundled_experiments_load_by_name_from_any_directory(tmp_path, monkeypatch):
    from replearn.config.sections import bundled_experiments, load_config

    monkeypatch.chdir(tmp_path)
    assert {"digits", "fashion_mnist", "objectives"} <= set(bundled_experiments())
    assert load_config("fashion_mnist").data.name == "fashion-mnist"
    assert load_config("experiments/objectives.yaml").train.regimes[-1] == "contrastive"
    (tmp_path / "fashion_mnist.yaml").write_text("name: mine\n")
    assert load_config("fashion_mnist.yaml").name == "mine", "a file in the working directory comes first"
    with pytest.raises(ConfigError, match="bundled experiment \\(cifar10_resnet18, cifar10_small, digits, families, families_cifar10_resnet18, fashion_mnist, fashion_mnist_resnet18, objectives\\)"):
        load_config("fashion_mnsit")


def test_selection_notes_are_checked_against_trained_regimes():
    from replearn.config.sections import apply_overrides, config_from_dict

    raw = apply_overrides({}, ["selection.autoencoder=RankMe on validation (label-free)"])
    assert config_from_dict(raw).selection == {"autoencoder": "RankMe on validation (label-free)"}
    with pytest.raises(ConfigError, match="describes 'vae', which train.regimes does not train"):
        resolve(config_from_dict({"selection": {"vae": "by hand"}}))
    with pytest.raises(ConfigError, match="must map regime names to a sentence each"):
        config_from_dict({"selection": ["vae"]})


def test_replearn_errors_are_value_errors_for_python_callers():
    from replearn.config import config_from_dict

    with pytest.raises(ValueError, match="fix:"):
        config_from_dict({"train": {"epochs": "many"}})
