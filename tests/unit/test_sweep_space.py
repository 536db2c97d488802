"""Sweep definitions: validated before any trial starts, turned into Ray Tune objects."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ray.tune.schedulers import ASHAScheduler

from lensops.config import ConfigError
from lensops.tuning.space import load_sweep, trial_config

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted((REPO / "tuning").glob("*.yaml"))


def _write(tmp_path: Path, **fields) -> Path:
    definition = {"name": "t", "base_config": str(REPO / "configs" / "synthetic.yaml"), **fields}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(definition))
    return path


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_sweeps_are_valid(path: Path) -> None:
    sweep, base = load_sweep(path)
    assert sweep.space and base.train.early_stopping_metric == sweep.metric


def test_shipped_sweeps_cover_every_built_in_task() -> None:
    tasks = {load_sweep(p)[1].model.task for p in SHIPPED}
    assert tasks == {"classification", "regression", "change_detection"}


def test_unknown_space_key_is_named(tmp_path: Path) -> None:
    path = _write(tmp_path, space={"train.lrr": {"choice": [0.1]}})
    with pytest.raises(ConfigError, match=r"train\.lrr"):
        load_sweep(path)


def test_unknown_section_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="trian"):
        load_sweep(_write(tmp_path, space={"trian.lr": {"choice": [0.1]}}))


def test_invalid_value_in_space_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"train\.batch_size"):
        load_sweep(_write(tmp_path, space={"train.batch_size": {"choice": [0, 8]}}))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"space": {"train.lr": {"loguniform": [0, 1]}}}, "positive"),
        ({"space": {"train.lr": {"uniform": [0.1, 0.01]}}}, "below"),
        ({"space": {"train.lr": {"between": [1, 2]}}}, "between"),
        ({"space": {"train.lr": {"grid": [0.1]}}, "search": {"algorithm": "optuna"}}, "choice"),
        ({"space": {"train.lr": {"uniform": [0.1, 0.2]}}, "search": {"algorithm": "grid"}}, "grid"),
        ({"space": {"train.lr": {"choice": [0.1]}}, "metric": "val_acc"}, "val_acc"),
        ({"space": {}}, "space"),
        ({"space": {"train.lr": {"choice": [0.1]}}, "schedular": {}}, "schedular"),
    ],
)
def test_invalid_definitions_fail_with_the_reason(tmp_path: Path, fields: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_sweep(_write(tmp_path, **fields))


def test_section_choice_merges_a_bundle_of_settings(tmp_path: Path) -> None:
    bundle = {"architecture": "timm:tf_efficientnet_lite0", "weights": "efficientnet-lite0"}
    _, base = load_sweep(_write(tmp_path, space={"model": {"choice": [bundle]}}))
    cfg = trial_config(base, {"model": bundle})
    assert cfg.model.architecture == bundle["architecture"] and cfg.model.weights == bundle["weights"]
    assert cfg.model.task == base.model.task  # untouched keys of the section stay


def test_sweep_fixes_resources_and_ranks_by_its_metric(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        metric="val_accuracy",
        mode="max",
        resources={"num_workers": 3, "cpus_per_worker": 2},
        space={"train.lr": {"loguniform": [1e-4, 1e-2]}},
    )
    sweep, base = load_sweep(path)
    assert (base.train.num_workers, base.train.cpus_per_worker) == (3, 2)
    assert (base.train.early_stopping_metric, base.train.early_stopping_mode) == ("val_accuracy", "max")
    assert isinstance(sweep.trial_scheduler(base.train.epochs), ASHAScheduler)
    assert sweep.most_epochs(base.train.epochs) == base.train.epochs


@pytest.mark.parametrize(("param", "most"), [({"randint": [2, 9]}, 8), ({"choice": [3, 12, 5]}, 12)])
def test_asha_horizon_covers_swept_epochs(tmp_path: Path, param: dict, most: int) -> None:
    sweep, base = load_sweep(_write(tmp_path, space={"train.epochs": param}))
    assert sweep.most_epochs(base.train.epochs) == most


def test_optuna_search_suggests_values_inside_the_space(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        search={"algorithm": "optuna", "seed": 1},
        space={"train.lr": {"loguniform": [1e-4, 1e-2]}, "train.batch_size": {"choice": [16, 32]}},
    )
    sweep, base = load_sweep(path)
    searcher = sweep.searcher()
    assert searcher.set_search_properties(sweep.metric, sweep.mode, sweep.param_space())
    suggestions = [searcher.suggest(f"t{i}") for i in range(5)]
    for params in suggestions:
        assert 1e-4 <= params["train.lr"] <= 1e-2 and params["train.batch_size"] in (16, 32)
        assert trial_config(base, params).train.lr == params["train.lr"]
    assert len({p["train.lr"] for p in suggestions}) == 5
