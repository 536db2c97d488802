"""Champion/challenger: evaluate both on the same test split and move ``champion`` if earned."""

from __future__ import annotations

import ray
from pydantic import BaseModel

from lensops.config import DataConfig, LensopsConfig
from lensops.data.catalog import Catalog, build_catalog
from lensops.data.loading import split_datasets
from lensops.model.preprocess import PreprocessSpec
from lensops.tracking import registry, runs
from lensops.tracking.registry import CHAMPION, LoadedModel
from lensops.training.evaluation import evaluate


class Score(BaseModel):
    version: str
    metrics: dict[str, float]


class Decision(BaseModel):
    model_name: str
    metric: str
    higher_is_better: bool
    margin: float
    dataset_version: str
    challenger: Score
    champion: Score | None
    promoted: bool
    reason: str


def decide(
    metric: str, higher_is_better: bool, margin: float, challenger: float, champion: float | None
) -> tuple[bool, str]:
    """Promote when there is no champion, or the challenger beats it by more than ``margin``."""
    if champion is None:
        return True, "no champion yet"
    gain = challenger - champion if higher_is_better else champion - challenger
    if gain > margin:
        return True, f"{metric} improves by {gain:.4f} (> margin {margin})"
    return False, f"{metric} changes by {gain:+.4f}, not more than margin {margin}"


def evaluate_and_promote(
    cfg: LensopsConfig, challenger_ref: str = registry.CHALLENGER, catalog: Catalog | None = None
) -> Decision:
    """Score challenger and champion on the challenger's data, then promote or keep.

    ``catalog`` reuses a catalog of that same data built just before (as the demo does)."""
    uri = runs.resolve_uri(cfg.tracking)
    name = cfg.tracking.registered_model
    challenger = registry.load(uri, name, challenger_ref)
    champion_version = registry.find(uri, name, CHAMPION)
    data_cfg = DataConfig.model_validate(challenger.spec.config["data"])
    catalog = catalog or build_catalog(data_cfg, challenger.spec.task)
    test_splits: dict[tuple[str, PreprocessSpec], ray.data.Dataset] = {}

    def score(loaded: LoadedModel) -> Score:
        """Both models see the same test files, decoded once per distinct task and preprocessing."""
        spec = loaded.spec
        key = (spec.model.task, spec.preprocess)
        if key not in test_splits:
            test_splits[key] = split_datasets(catalog, spec.task, spec.preprocess, data_cfg, splits=("test",))["test"]
        metrics = evaluate(loaded.model, spec, test_splits[key]).metrics
        return Score(version=loaded.version.version, metrics=metrics)

    task = challenger.spec.task
    metric = cfg.tracking.promotion_metric or task.promotion_metric
    challenger_score = score(challenger)
    champion_score = None
    if champion_version is not None:
        champion_score = score(registry.load(uri, name, champion_version.version))
    if champion_score and champion_score.version == challenger_score.version:
        promoted, reason = False, f"version {challenger_score.version} is already the champion"
    else:
        promoted, reason = decide(
            metric,
            task.higher_is_better(metric),
            cfg.tracking.promotion_margin,
            challenger_score.metrics[metric],
            champion_score.metrics[metric] if champion_score else None,
        )
    if promoted:
        registry.set_alias(uri, name, CHAMPION, challenger_score.version)
    decision = Decision(
        model_name=name,
        metric=metric,
        higher_is_better=task.higher_is_better(metric),
        margin=cfg.tracking.promotion_margin,
        dataset_version=catalog.version,
        challenger=challenger_score,
        champion=champion_score,
        promoted=promoted,
        reason=reason,
    )
    runs.log_dict(uri, challenger.version.run_id, decision.model_dump(mode="json"), "evaluation/decision.json")
    return decision
