"""Sweep definitions: a YAML file in ``tuning/`` validated here, turned into Ray Tune objects.

A sweep names a base lensops config, a search space over any of its dotted keys, the search
algorithm, the trial scheduler and the resources of one trial::

    base_config: ../configs/synthetic.yaml
    metric: val_loss
    mode: min
    num_samples: 8
    space:
      train.lr: {loguniform: [1.0e-4, 1.0e-2]}
      train.batch_size: {choice: [16, 32]}

Every key of the space is checked against the config schema when the file is loaded, so a
typo fails before any trial starts, with the key's name.
"""

from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher

from lensops.config import ConfigError, LensopsConfig, describe_error, load_config
from lensops.model.tasks import get_task


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Choice(_Strict):
    choice: list[Any] = Field(min_length=1)

    def domain(self) -> Any:
        return tune.choice(self.choice)

    def example(self) -> Any:
        return self.choice[0]


class Grid(_Strict):
    grid: list[Any] = Field(min_length=1)

    def domain(self) -> Any:
        return tune.grid_search(self.grid)

    def example(self) -> Any:
        return self.grid[0]


class _Range(_Strict, ABC):
    @model_validator(mode="after")
    def _ordered(self) -> _Range:
        low, high = self.bounds()
        if not low < high:
            raise ValueError(f"lower bound {low} must be below upper bound {high}")
        return self

    @abstractmethod
    def bounds(self) -> tuple[float, float]:
        """The (low, high) pair of the range."""

    def example(self) -> Any:
        return self.bounds()[0]


class Uniform(_Range):
    uniform: tuple[float, float]

    def bounds(self) -> tuple[float, float]:
        return self.uniform

    def domain(self) -> Any:
        return tune.uniform(*self.uniform)


class LogUniform(_Range):
    loguniform: tuple[float, float]

    def bounds(self) -> tuple[float, float]:
        return self.loguniform

    @model_validator(mode="after")
    def _positive(self) -> LogUniform:
        if self.loguniform[0] <= 0:
            raise ValueError("loguniform bounds must be positive")
        return self

    def domain(self) -> Any:
        return tune.loguniform(*self.loguniform)


class RandInt(_Range):
    randint: tuple[int, int]
    """Integers from the lower bound up to, not including, the upper bound."""

    def bounds(self) -> tuple[float, float]:
        return self.randint

    def domain(self) -> Any:
        return tune.randint(*self.randint)


Param = Choice | Grid | Uniform | LogUniform | RandInt


class SearchConfig(_Strict):
    algorithm: Literal["random", "grid", "optuna"] = "random"
    """``random`` samples each trial (``grid`` keys are crossed with the samples); ``grid``
    enumerates every ``grid``/``choice`` key; ``optuna`` is Optuna's TPE through Tune."""
    seed: int | None = 0


class SchedulerConfig(_Strict):
    kind: Literal["asha", "fifo"] = "asha"
    grace_period: int = Field(1, ge=1)
    """Epochs every trial runs before ASHA may stop it."""
    reduction_factor: float = Field(2.0, gt=1)


class TrialResources(_Strict):
    """One trial is one data-parallel Ray Train run of this size."""

    num_workers: int = Field(1, ge=1)
    cpus_per_worker: float = Field(1.0, gt=0)
    use_gpu: bool = False


class SweepConfig(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    """Names the Tune experiment (resumable under this name) and the MLflow parent run."""
    base_config: str | None = None
    """A lensops YAML config, relative to the sweep file; the defaults when absent."""
    overrides: list[str] = []
    metric: str = "val_loss"
    mode: Literal["min", "max"] = "min"
    num_samples: int = Field(4, ge=1)
    max_concurrent_trials: int = Field(2, ge=1)
    search: SearchConfig = SearchConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    resources: TrialResources = TrialResources()
    space: dict[str, Param] = Field(min_length=1)
    storage_path: str | None = None
    """Where Tune keeps experiment state (shared storage on a cluster); defaults to
    ``<data.work_dir>/tune``."""

    @model_validator(mode="after")
    def _consistent(self) -> SweepConfig:
        grids = [key for key, param in self.space.items() if isinstance(param, Grid)]
        if self.search.algorithm == "optuna" and grids:
            raise ValueError(f"optuna samples values itself: make {grids} 'choice' instead of 'grid'")
        if self.search.algorithm == "grid":
            sampled = [key for key, param in self.space.items() if not isinstance(param, (Grid, Choice))]
            if sampled:
                raise ValueError(f"grid search enumerates values: {sampled} need 'grid' or 'choice' lists")
        return self

    def fixed_overrides(self) -> list[str]:
        """The sweep's own overrides plus what every trial must share with the sweep."""
        resources = self.resources
        return [
            *self.overrides,
            f"train.num_workers={resources.num_workers}",
            f"train.cpus_per_worker={resources.cpus_per_worker}",
            f"train.use_gpu={str(resources.use_gpu).lower()}",
            # the kept checkpoint and early stopping follow the metric the sweep ranks by
            f"train.early_stopping_metric={self.metric}",
            f"train.early_stopping_mode={self.mode}",
        ]

    def param_space(self) -> dict[str, Any]:
        if self.search.algorithm == "grid":
            return {key: tune.grid_search(_values(param)) for key, param in self.space.items()}
        return {key: param.domain() for key, param in self.space.items()}

    def searcher(self) -> Searcher | None:
        if self.search.algorithm != "optuna":
            return None  # Tune's own variant generator: random sampling and grids
        if importlib.util.find_spec("optuna") is None:
            raise ConfigError("search.algorithm=optuna needs Optuna: pip install 'lensops[optuna]'")
        from ray.tune.search.optuna import OptunaSearch

        return OptunaSearch(metric=self.metric, mode=self.mode, seed=self.search.seed)

    def most_epochs(self, base_epochs: int) -> int:
        """The longest any trial trains: the base config's epochs unless the space sets them."""
        param = self.space.get("train.epochs")
        if param is None:
            return base_epochs
        if isinstance(param, (Choice, Grid)):
            return int(max(_values(param)))
        high = param.bounds()[1]
        return int(high) - 1 if isinstance(param, RandInt) else int(high)

    def trial_scheduler(self, base_epochs: int) -> TrialScheduler:
        if self.scheduler.kind == "fifo":
            return FIFOScheduler()
        epochs = self.most_epochs(base_epochs)
        # max_t one past the last epoch: a trial that runs to the end finishes on its own, so its
        # last epoch is never cut short by the scheduler's "reached max_t" stop.
        return ASHAScheduler(
            time_attr="training_iteration",
            metric=self.metric,
            mode=self.mode,
            max_t=epochs + 1,
            grace_period=self.scheduler.grace_period,
            reduction_factor=self.scheduler.reduction_factor,
        )


def _values(param: Param) -> list[Any]:
    return param.grid if isinstance(param, Grid) else param.choice


def load_sweep(path: str | Path, overrides: list[str] | None = None) -> tuple[SweepConfig, LensopsConfig]:
    """Validate a sweep file and resolve its base config; every space key is checked."""
    path = Path(path)
    raw = yaml.safe_load(path.read_text()) or {}
    try:
        sweep = SweepConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(describe_error(exc, path)) from None
    if sweep.base_config:
        sweep.base_config = str((path.parent / sweep.base_config).resolve())
    task = load_config(sweep.base_config, overrides).model.task
    reported = get_task(task).reported_metrics()
    if sweep.metric not in reported:
        listed = ", ".join(sorted(reported))
        raise ConfigError(f"{path}: metric '{sweep.metric}' is not reported by {task} training; use one of {listed}")
    base = load_config(sweep.base_config, [*sweep.fixed_overrides(), *(overrides or [])])
    for key, param in sweep.space.items():
        try:
            trial_config(base, {key: param.example()})
        except ConfigError as exc:
            raise ConfigError(f"{path}: search space key '{key}': {exc}") from None
    return sweep, base


def trial_config(base: LensopsConfig, params: dict[str, Any]) -> LensopsConfig:
    """The base config with one trial's values applied.

    A key names a setting (``train.lr``) or a section; a section takes a mapping that is
    merged into it, so one choice can bundle settings that belong together::

        model: {choice: [{architecture: resnet18, weights: imagenet}, {architecture: ...}]}
    """
    raw = base.model_dump(mode="json")
    for key, value in params.items():
        *parents, leaf = key.split(".")
        node = raw
        for part in parents:
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"unknown section '{part}' in '{key}'")
            node = node[part]
        if isinstance(value, dict) and isinstance(node.get(leaf), dict):
            node[leaf] = {**node[leaf], **value}
        else:
            node[leaf] = value
    try:
        return LensopsConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(describe_error(exc, None)) from None
