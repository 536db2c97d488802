"""Champion/challenger: evaluate both on the same test split and move ``champion`` if earned."""

from __future__ import annotations

import ray
from pydantic import BaseModel

from lensops import registry, tracking
from lensops.catalog import Catalog, build_catalog
from lensops.config import DataConfig, LensopsConfig
from lensops.datasets import split_datasets
from lensops.evaluate import default_metric, evaluate, higher_is_better
from lensops.preprocess import PreprocessSpec
from lensops.registry import CHAMPION, LoadedModel


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


def decide(metric: str, margin: float, challenger: float, champion: float | None) -> tuple[bool, str]:
    """Promote when there is no champion, or the challenger beats it by more than ``margin``."""
    if champion is None:
        return True, "no champion yet"
    gain = challenger - champion if higher_is_better(metric) else champion - challenger
    if gain > margin:
        return True, f"{metric} improves by {gain:.4f} (> margin {margin})"
    return False, f"{metric} changes by {gain:+.4f}, not more than margin {margin}"


def evaluate_and_promote(
    cfg: LensopsConfig, challenger_ref: str = registry.CHALLENGER, catalog: Catalog | None = None
) -> Decision:
    """Score challenger and champion on the challenger's data, then promote or keep.

    ``catalog`` reuses a catalog of that same data built just before (as the demo does)."""
    uri = tracking.resolve_uri(cfg.tracking)
    name = cfg.tracking.registered_model
    challenger = registry.load(uri, name, challenger_ref)
    champion_version = registry.find(uri, name, CHAMPION)
    data_cfg = DataConfig.model_validate(challenger.spec.config["data"])
    catalog = catalog or build_catalog(data_cfg)
    test_splits: dict[PreprocessSpec, ray.data.Dataset] = {}

    def score(loaded: LoadedModel) -> Score:
        """Both models see the same test files, decoded once per distinct preprocessing."""
        spec = loaded.spec.preprocess
        if spec not in test_splits:
            test_splits[spec] = split_datasets(catalog, spec, data_cfg, splits=("test",))["test"]
        metrics = evaluate(loaded.model, loaded.spec, test_splits[spec]).metrics
        return Score(version=loaded.version.version, metrics=metrics)

    metric = cfg.tracking.promotion_metric or default_metric(challenger.spec.task)
    challenger_score = score(challenger)
    champion_score = None
    if champion_version is not None:
        champion_score = score(registry.load(uri, name, champion_version.version))
    if champion_score and champion_score.version == challenger_score.version:
        promoted, reason = False, f"version {challenger_score.version} is already the champion"
    else:
        promoted, reason = decide(
            metric,
            cfg.tracking.promotion_margin,
            challenger_score.metrics[metric],
            champion_score.metrics[metric] if champion_score else None,
        )
    if promoted:
        registry.set_alias(uri, name, CHAMPION, challenger_score.version)
    decision = Decision(
        model_name=name,
        metric=metric,
        higher_is_better=higher_is_better(metric),
        margin=cfg.tracking.promotion_margin,
        dataset_version=catalog.version,
        challenger=challenger_score,
        champion=champion_score,
        promoted=promoted,
        reason=reason,
    )
    tracking.log_dict(uri, challenger.version.run_id, decision.model_dump(mode="json"), "evaluation/decision.json")
    return decision
