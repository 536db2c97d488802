"""Configuration: defaults, YAML, ``--set`` overrides, strict keys and round trips."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lensops.config import ConfigError, LensopsConfig, load_config


def write_yaml(path: Path, data: object) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def test_defaults_load_without_a_file() -> None:
    cfg = load_config()

    assert cfg == LensopsConfig()
    assert cfg.train.lr == 1e-3
    assert cfg.train.optimizer == "adamw"
    assert (cfg.data.split.train, cfg.data.split.val, cfg.data.split.test) == (0.7, 0.2, 0.1)
    assert cfg.preprocess.image_size == 224
    assert cfg.preprocess.mean is None
    assert cfg.model.task == "classification"


def test_an_empty_yaml_file_gives_the_defaults(tmp_path: Path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("")

    assert load_config(empty) == LensopsConfig()


def test_yaml_values_apply_and_other_keys_keep_their_defaults(tmp_path: Path) -> None:
    path = write_yaml(
        tmp_path / "c.yaml",
        {"train": {"epochs": 3, "optimizer": "sgd"}, "data": {"source": "s3://bucket/cells"}},
    )

    cfg = load_config(path)

    assert cfg.train.epochs == 3
    assert cfg.train.optimizer == "sgd"
    assert cfg.data.source == "s3://bucket/cells"
    assert cfg.train.lr == 1e-3
    assert cfg.data.split.train == 0.7


def test_overrides_apply_on_top_of_yaml_with_yaml_typing(tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "c.yaml", {"train": {"lr": 0.5, "epochs": 3}})

    cfg = load_config(
        path,
        [
            "train.lr=0.01",
            "data.split.train=0.8",
            "data.split.val=0.1",
            "model.freeze_backbone=true",
            "train.grad_clip_norm=null",
            "preprocess.mean=[0.5, 0.5, 0.5]",
            "data.target_column=dust_level",
            "data.source=s3://bucket/a=b",
        ],
    )

    assert cfg.train.lr == 0.01
    assert isinstance(cfg.train.lr, float)
    assert cfg.train.epochs == 3
    assert (cfg.data.split.train, cfg.data.split.val, cfg.data.split.test) == (0.8, 0.1, 0.1)
    assert cfg.model.freeze_backbone is True
    assert cfg.train.grad_clip_norm is None
    assert cfg.preprocess.mean == (0.5, 0.5, 0.5)
    assert cfg.data.target_column == "dust_level"
    assert cfg.data.source == "s3://bucket/a=b"


def test_later_overrides_win() -> None:
    cfg = load_config(None, ["train.epochs=2", "train.epochs=7"])

    assert cfg.train.epochs == 7


def test_an_unknown_key_in_yaml_is_an_error_naming_its_dotted_path(tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "typo.yaml", {"train": {"lrr": 0.1}})

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    assert "unknown key 'train.lrr'" in str(caught.value)
    assert str(path) in str(caught.value)


def test_an_unknown_nested_key_in_yaml_names_the_full_path(tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "typo.yaml", {"data": {"split": {"trian": 0.7}}})

    with pytest.raises(ConfigError, match=r"unknown key 'data\.split\.trian'"):
        load_config(path)


def test_an_unknown_key_in_an_override_is_an_error_naming_it() -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'train\.lrr'"):
        load_config(None, ["train.lrr=0.01"])


def test_an_unknown_section_in_an_override_is_an_error_naming_it() -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'trian'"):
        load_config(None, ["trian.lr=0.01"])


def test_a_value_of_the_wrong_type_is_an_error_naming_the_key() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, ["train.epochs=many"])

    assert "train.epochs:" in str(caught.value)
    assert "'many'" in str(caught.value)


def test_a_value_out_of_range_is_an_error_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"train\.lr: .*greater than 0"):
        load_config(None, ["train.lr=-1"])


@pytest.mark.parametrize("item", ["train.lr", "=1", " =1"])
def test_a_malformed_override_is_an_error(item: str) -> None:
    with pytest.raises(ConfigError, match=r"must look like section\.key=value"):
        load_config(None, [item])


def test_an_override_below_a_value_is_an_error(tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "c.yaml", {"train": 3})

    with pytest.raises(ConfigError, match="'train' is a value, not a section"):
        load_config(path, ["train.lr=0.1"])


def test_a_yaml_file_that_is_not_a_mapping_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")

    with pytest.raises(ConfigError, match="expected a mapping at the top level, got list"):
        load_config(path)


@pytest.mark.parametrize(
    "overrides",
    [
        ["data.split.train=0.8"],
        ["data.split.train=0.5", "data.split.val=0.2", "data.split.test=0.2"],
    ],
)
def test_split_fractions_that_do_not_sum_to_one_are_an_error(overrides: list[str]) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, overrides)

    assert "data.split:" in str(caught.value)
    assert "split fractions must sum to 1" in str(caught.value)


def test_flat_gives_dotted_keys_with_plain_values() -> None:
    flat = load_config(None, ["train.lr=0.01"]).flat()

    assert flat["train.lr"] == 0.01
    assert flat["data.split.train"] == 0.7
    assert flat["preprocess.augment.hflip"] == 0.5
    assert flat["preprocess.augment.blur_sigma"] == [0.1, 1.5]
    assert flat["tracking.tracking_uri"] is None
    assert not any(isinstance(value, dict) for value in flat.values())
    assert set(flat) >= {"data.source", "model.architecture", "serve.max_batch_size"}
    sections = {key.split(".")[0] for key in flat}
    assert sections == {"data", "preprocess", "model", "train", "tracking", "serve", "batch", "monitor"}


def test_the_json_dump_round_trips_through_load(tmp_path: Path) -> None:
    cfg = load_config(
        None,
        [
            "train.lr=0.01",
            "data.split.train=0.8",
            "data.split.val=0.1",
            "preprocess.mean=[0.5, 0.4, 0.3]",
            "preprocess.augment.blur_sigma=[0.2, 2.0]",
            "model.architecture=timm:efficientnet_lite0",
        ],
    )
    path = write_yaml(tmp_path / "resolved.yaml", cfg.model_dump(mode="json"))

    assert load_config(path) == cfg
    assert load_config(path).flat() == cfg.flat()


def test_assignment_is_validated() -> None:
    cfg = load_config()

    with pytest.raises(ValueError, match="greater than 0"):
        cfg.train.lr = 0
