"""Ray Tune sweeps: definitions validated up front, then a real ASHA sweep on local Ray.

The sweep's grid has a useful learning rate and a useless one, so ASHA has a poor trial to stop
at its first rung; each trial is a real Ray Train fit tracked as an MLflow child run.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import REPO

from lensops.config import LensopsConfig
from lensops.tracking import registry, runs
from lensops.tuning.space import SweepConfig, load_sweep
from lensops.tuning.sweep import SweepOutcome, run_sweep


def _write(folder: Path, **fields) -> Path:
    definition = {"name": "t", "base_config": str(REPO / "configs" / "synthetic.yaml"), **fields}
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump(definition))
    return path


@pytest.fixture(scope="module")
def asha_definition(training_dir: Path, mlflow_uri: str, tmp_path_factory) -> tuple[SweepConfig, LensopsConfig]:
    work = tmp_path_factory.mktemp("sweep")
    path = _write(
        work,
        name="test-asha",
        metric="val_loss",
        mode="min",
        num_samples=1,
        # one at a time: the poor trial meets the useful one's result at the rung, so ASHA's
        # call is certain, and no trial runs on beside it
        max_concurrent_trials=1,
        search={"algorithm": "grid"},
        scheduler={"kind": "asha", "grace_period": 1, "reduction_factor": 2},
        resources={"num_workers": 1, "cpus_per_worker": 1},
        storage_path=str(work / "tune"),
        # a useful rate first, then one that barely moves the weights: a poor trial for ASHA to stop
        space={"train.lr": {"grid": [0.003, 0.000001]}},
    )
    return load_sweep(
        path,
        [
            f"data.source={training_dir}",
            f"data.work_dir={work}",
            f"tracking.tracking_uri={mlflow_uri}",
            "tracking.experiment=test-sweep",
            "tracking.registered_model=test-sweep",
            "model.architecture=timm:tf_efficientnet_lite0",
            "model.weights=efficientnet-lite0",
            "preprocess.image_size=48",
            "train.epochs=3",
            "train.warmup_epochs=0",
            "train.batch_size=16",
        ],
    )


@pytest.fixture(scope="module")
def asha_sweep(ray_cluster: None, asha_definition: tuple[SweepConfig, LensopsConfig]) -> SweepOutcome:
    return run_sweep(*asha_definition)


@pytest.mark.slow
def test_asha_stops_the_poor_trial_early(asha_sweep: SweepOutcome, mlflow_uri: str) -> None:
    stopped = [t for t in asha_sweep.trials if t.status == "stopped"]
    assert stopped, [(t.params, t.status, t.epochs) for t in asha_sweep.trials]
    client = runs.client(mlflow_uri)
    for trial in stopped:
        run = client.get_run(trial.run_id)
        assert run.info.status == "KILLED" and run.data.tags["lensops.stopped_early"] == "scheduler"
        # its training really stopped: fewer epochs were ever logged than planned
        assert len(client.get_metric_history(trial.run_id, "val_loss")) < 3
    assert len(stopped) == 1 and asha_sweep.trials[0].status != "stopped"  # the best trial runs on


@pytest.mark.slow
def test_mlflow_holds_one_parent_and_a_child_per_trial(asha_sweep: SweepOutcome, mlflow_uri: str) -> None:
    children = runs.children(mlflow_uri, asha_sweep.parent_run_id)
    assert len(children) == 2
    assert sorted(float(c.data.params["train.lr"]) for c in children) == [0.000001, 0.003]
    assert all("val_loss" in c.data.metrics for c in children)
    client = runs.client(mlflow_uri)
    parent = client.get_run(asha_sweep.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.params["space.train.lr"].startswith('{"grid"')
    artifacts = {a.path for folder in ("sweep", "plots") for a in client.list_artifacts(parent.info.run_id, folder)}
    assert {"sweep/trials.json", "sweep/best_config.yaml", "sweep/definition.yaml", "plots/trials.png"} <= artifacts
    assert parent.data.metrics["trials_stopped"] == 1


@pytest.mark.slow
def test_best_trial_is_registered_as_challenger(asha_sweep: SweepOutcome, mlflow_uri: str) -> None:
    best = asha_sweep.trials[0]
    assert best.params["train.lr"] == 0.003
    assert best.best == min(t.best for t in asha_sweep.trials if t.best is not None)
    challenger = registry.find(mlflow_uri, "test-sweep", registry.CHALLENGER)
    assert challenger.version == asha_sweep.best.version and challenger.run_id == best.run_id
    assert asha_sweep.best.test_metrics["test_accuracy"] >= 0.7


@pytest.mark.slow
def test_finished_sweep_is_restored_not_rerun(
    asha_sweep: SweepOutcome, asha_definition: tuple[SweepConfig, LensopsConfig], mlflow_uri: str
) -> None:
    """Running the same sweep again restores Tune's experiment: no new trial, same ranking."""
    again = run_sweep(*asha_definition)
    assert again.parent_run_id == asha_sweep.parent_run_id
    assert [t.trial_id for t in again.trials] == [t.trial_id for t in asha_sweep.trials]
    assert len(runs.children(mlflow_uri, asha_sweep.parent_run_id)) == 2
