import argparse

import pytest
import yaml

from lib.config import (
    Config,
    ConfigError,
    add_experiment_args,
    config_from_args,
    config_to_dict,
    load_config,
    parse_override,
    save_config,
)


def test_published_configs_load():
    deeplab = load_config(Config, "exp/DeepLab.yaml")
    assert deeplab.model.trainable_params_name_update == ["aspp", "bot_fine", "bot_aspp", "ood_head"]
    assert deeplab.loss.margins == [10.0, 5.0, 5.0] and deeplab.loss.ce_weights == [50.0, 10.0]
    assert (deeplab.train.warmup_epoch, deeplab.train.epochs, deeplab.train.lr_update) == (10, 50, 1e-6)
    m2f = load_config(Config, "exp/M2F.yaml")
    assert m2f.loss.margins == [0.7, 0.5, 0.2] and m2f.train.warmup_epoch == 5
    assert (m2f.loss.class_weight, m2f.loss.mask_weight, m2f.loss.dice_weight, m2f.loss.ood_weight) == (
        5.0,
        10.0,
        10.0,
        1.0,
    )


def test_overrides_are_typed_like_yaml(tmp_path):
    cfg = load_config(
        Config,
        "exp/DeepLab.yaml",
        ["train.lr=3e-4", "train.epochs=2", "data.scale_range=[0.75, 1.5]", "model.bn_train_mode=false"],
    )
    assert cfg.train.lr == 3e-4 and isinstance(cfg.train.lr, float)
    assert cfg.train.epochs == 2 and cfg.data.scale_range == [0.75, 1.5]
    assert cfg.model.bn_train_mode is False
    assert load_config(Config, None, ["train.lr=1"]).train.lr == 1.0  # ints widen to floats


def test_unknown_key_names_file_key_and_closest(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: unknown key 'train\.learning_rate'") as err:
        load_config(Config, path)
    path.write_text("train:\n  warmup_epochs: 3\n")
    with pytest.raises(ConfigError, match=r"Did you mean 'train\.warmup_epoch'\?"):
        load_config(Config, path)
    with pytest.raises(ConfigError, match=r"command line: unknown key 'modle'.*Did you mean 'model'"):
        load_config(Config, None, ["modle.name=x"])
    assert "Valid keys here" in str(err.value)


def test_wrong_type_names_key_and_expected_type(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  epochs: many\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: train\.epochs: expected int, got 'many'"):
        load_config(Config, path)
    with pytest.raises(ConfigError, match=r"train\.epochs: expected int, got True"):
        load_config(Config, None, ["train.epochs=true"])
    with pytest.raises(ConfigError, match=r"loss\.margins\[1\]: expected float"):
        load_config(Config, None, ["loss.margins=[1, x, 2]"])
    with pytest.raises(ConfigError, match=r"'train' is a section"):
        load_config(Config, None, ["train=3"])


@pytest.mark.parametrize("bad", ["train.lr", "=3", "train..lr=3", "train.lr=[1,"])
def test_bad_override_syntax(bad):
    with pytest.raises(ConfigError, match="command line"):
        parse_override(bad)


def test_base_chain_and_round_trip(tmp_path):
    (tmp_path / "base.yaml").write_text("train:\n  epochs: 7\n  lr: 0.5\n")
    (tmp_path / "child.yaml").write_text("_base_: base.yaml\ntrain:\n  lr: 0.25\n")
    cfg = load_config(Config, tmp_path / "child.yaml")
    assert (cfg.train.epochs, cfg.train.lr) == (7, 0.25)
    save_config(cfg, tmp_path / "out" / "config.yaml")
    saved = yaml.safe_load((tmp_path / "out" / "config.yaml").read_text())
    assert saved == config_to_dict(cfg)
    assert load_config(Config, tmp_path / "out" / "config.yaml") == cfg


def test_published_script_arguments():
    parser = add_experiment_args(argparse.ArgumentParser())
    args = parser.parse_args(
        ["--cfg", "exp/DeepLab.yaml", "--id", "run1", "--weight_path", "w.pth", "--test_dataset", "MUAD"]
        + ["--seed", "3", "train.epochs=1"]
    )
    cfg = config_from_args(args)
    assert (cfg.id, cfg.model.weight_path, cfg.train.seed) == ("run1", "w.pth", 3)
    assert cfg.eval.datasets == ["MUAD"]
    assert cfg.train.epochs == 1 and str(cfg.run_dir).endswith("run1")


def test_stage_two_optimizer_settings_default_to_stage_one():
    from lib.engine.stages import stages_from_config

    stage1, stage2 = stages_from_config(load_config(Config, "exp/M2F.yaml"))
    assert (stage1.optimizer, stage1.lr, stage1.weight_decay) == ("adam", 1e-4, 0.0)
    assert (stage2.optimizer, stage2.lr, stage2.weight_decay) == ("adamw", 1e-5, 0.05)
    stage1, stage2 = stages_from_config(load_config(Config, "exp/DeepLab.yaml"))
    assert (stage2.optimizer, stage2.weight_decay) == (stage1.optimizer, stage1.weight_decay) == ("adam", 0.0)
    assert (stage1.first_epoch, stage1.last_epoch, stage2.last_epoch) == (0, 10, 50)


def test_empty_file_is_an_error_naming_it(tmp_path):
    for text in ("", "# only a comment\n"):
        (tmp_path / "empty.yaml").write_text(text)
        with pytest.raises(ConfigError, match=r"empty\.yaml: the file is empty"):
            load_config(Config, tmp_path / "empty.yaml")


def test_repeated_key_names_file_key_and_lines(tmp_path):
    path = tmp_path / "twice.yaml"
    path.write_text("train:\n  epochs: 3\nmodel:\n  name: deeplab_wrn38\ntrain:\n  lr: 0.5\n")
    with pytest.raises(ConfigError, match=r"twice\.yaml: key 'train' appears twice \(lines 1 and 5\)"):
        load_config(Config, path)
    path.write_text("train:\n  epochs: 3\n  epochs: 4\n")
    with pytest.raises(ConfigError, match=r"twice\.yaml: key 'epochs' appears twice \(lines 2 and 3\)"):
        load_config(Config, path)
    with pytest.raises(ConfigError, match=r"command line: .*key 'lr' appears twice"):
        load_config(Config, None, ["train={lr: 1, lr: 2}"])


def test_invalid_yaml_names_the_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("train:\n  epochs: [1,\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml: not valid YAML"):
        load_config(Config, path)


@pytest.mark.parametrize(
    "override, key, length",
    [
        ("data.mean=[0.5]", "data.mean", 3),
        ("data.std=[0.2, 0.2, 0.2, 0.2]", "data.std", 3),
        ("data.scale_range=[2.0]", "data.scale_range", 2),
        ("loss.margins=[1.0, 2.0]", "loss.margins", 3),
        ("loss.ce_weights=[]", "loss.ce_weights", 2),
    ],
)
def test_fixed_length_lists_are_checked(override, key, length, tmp_path):
    with pytest.raises(ConfigError, match=rf"command line: {key}: expected {length} values, got"):
        load_config(Config, None, [override])
    section, name = key.split(".")
    (tmp_path / "short.yaml").write_text(f"{section}:\n  {name}: [1.0]\n")
    with pytest.raises(ConfigError, match=rf"short\.yaml: {key}: expected {length} values, got 1"):
        load_config(Config, tmp_path / "short.yaml")


def test_generation_fixed_length_lists_are_checked():
    from generation.config import GenerationConfig

    with pytest.raises(ConfigError, match=r"paste\.size_range: expected 2 values"):
        load_config(GenerationConfig, None, ["paste.size_range=[100]"])
