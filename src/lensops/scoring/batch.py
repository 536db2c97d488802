"""Offline batch scoring: every image under a location, scored by one registered version.

The plan, on Ray Data:

1. **read and check** (CPU tasks, :func:`lensops.data.reading.map_rows`): read each file, hash
   it, drop it if the output already holds it for this model version, check it with the
   service's image rules and decode it with the model's own preprocessing spec;
2. **score and write** (an actor pool, one model copy per actor, a GPU each when the cluster
   has them): one forward pass per batch through the model's task, then the batch's records
   are written as one parquet part (:mod:`lensops.scoring.parts`).

A file that cannot be read or breaks a rule becomes a record with its reason; it never fails
the job. The version is resolved once, before any actor starts, so an alias that moves
mid-job does not mix two models in one output.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import ray

from lensops.config import LensopsConfig, Runtime
from lensops.data import storage
from lensops.data.reading import map_rows
from lensops.model.forward import ModelInfo
from lensops.monitoring import records
from lensops.progress import tracked
from lensops.scoring import parts
from lensops.scoring.checking import FILE_COLUMNS, SIZE_COLUMNS, ImageRules, read_and_check
from lensops.scoring.inputs import list_inputs
from lensops.tracking import registry, runs


@dataclass
class BatchOutcome:
    output: str
    model: ModelInfo
    files: int
    already_scored: int
    predictions: Counter = field(default_factory=Counter)
    """Scored files per predicted label (regression: one ``value`` entry)."""
    rejected: Counter = field(default_factory=Counter)
    """Rejected files per reason."""
    run_id: str = ""

    @property
    def scored(self) -> int:
        return sum(self.predictions.values())

    def lines(self) -> list[str]:
        """The outcome as a person reads it: one fact per line."""
        model, rejected = self.model, sum(self.rejected.values())
        counts = f"{self.scored} scored, {rejected} rejected, {self.already_scored} already in the output"
        lines = [
            f"model: {model.name} version {model.version} (dataset {model.dataset_version})",
            f"files: {self.files} ({counts})",
        ]
        for title, counts in (("predicted", self.predictions), ("rejected", self.rejected)):
            if counts:
                lines.append(f"{title}: " + ", ".join(f"{name} {n}" for name, n in sorted(counts.items())))
        return [*lines, f"output: {self.output}", f"mlflow run: {self.run_id}"]

    def summary(self) -> dict[str, Any]:
        return {
            "output": self.output,
            "model": self.model.as_dict(),
            "files": self.files,
            "already_scored": self.already_scored,
            "scored": self.scored,
            "rejected": sum(self.rejected.values()),
            "predictions": dict(self.predictions),
            "rejected_by_reason": dict(self.rejected),
        }


def batch_predict(cfg: LensopsConfig, source: str, output: str) -> BatchOutcome:
    """Score every image file of ``source`` with ``cfg.batch.model`` into ``output``; track it."""
    uri = runs.resolve_uri(cfg.tracking)
    version = registry.require(uri, cfg.tracking.registered_model, cfg.batch.model)
    spec = registry.load_spec(uri, version)
    if spec.task.inputs != ("image",):
        raise ValueError(
            f"batch scoring takes one image per example; the {spec.model.task} task takes {spec.task.inputs}"
        )
    info = ModelInfo(version.name, version.version, version.run_id, spec.dataset_version)
    files = list_inputs(source)
    parts.prepare(output)
    done = parts.scored_keys(output, info.name, info.version)
    rules = ImageRules(cfg.serve.min_side, cfg.serve.max_side, cfg.serve.max_pixels)
    fs, _ = storage.resolve(source)
    # read blocks of one scoring batch each: small jobs spread over every actor, and a block
    # fused into an actor is scored in one pass
    reading = cfg.data.model_copy(update={"decode_batch_size": cfg.batch.batch_size})
    kwargs = {"fs": fs, "spec": spec.preprocess, "rules": rules, "done": done}
    checked = map_rows(files, read_and_check, kwargs, reading)
    use_gpu = cfg.batch.runtime == "torch" and _use_gpu(cfg.batch.device)
    scored = checked.map_batches(
        Scorer,
        fn_constructor_kwargs={
            "tracking_uri": uri,
            "info": info,
            "output": output,
            "use_gpu": use_gpu,
            "embed": cfg.batch.embeddings,
            "runtime": cfg.batch.runtime,
        },
        batch_size=cfg.batch.batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=cfg.batch.concurrency),
        num_gpus=1 if use_gpu else 0,
    )
    outcome = BatchOutcome(output=output, model=info, files=len(files), already_scored=0)
    batches = scored.iter_batches(batch_format="pandas", batch_size=None)
    for batch in tracked(batches, len(files), f"scoring with {info.name} v{info.version}"):
        outcome.predictions.update(batch.loc[batch["status"] == records.OK, "label"])
        outcome.rejected.update(batch.loc[batch["status"] == records.REJECTED, "reason"])
    outcome.already_scored = outcome.files - outcome.scored - sum(outcome.rejected.values())
    outcome.run_id = _track(uri, cfg, source, outcome)
    return outcome


def _use_gpu(device: str) -> bool:
    return device == "cuda" or (device == "auto" and ray.cluster_resources().get("GPU", 0) > 0)


class Scorer:
    """One actor of the scoring pool: a loaded model version that scores a batch of checked
    files, writes their records as one part and hands back what the driver counts."""

    def __init__(
        self,
        tracking_uri: str,
        info: ModelInfo,
        output: str,
        use_gpu: bool,
        embed: bool = False,
        runtime: Runtime = "torch",
    ):
        # set here, not as a runtime_env: remote args of its own would stop Ray Data from fusing
        # the read-and-check tasks into this actor on CPU (one pass per batch, no copy between)
        os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
        device = "cuda" if use_gpu else "cpu"
        self.predictor = registry.load_predictor(tracking_uri, info.name, info.version, device, runtime)
        self.output = output
        self.embed = embed

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows, labels = self.records(batch)
        if rows:
            parts.write_part(records.table(rows), self.output)
        return {
            "status": np.array([row["status"] for row in rows], dtype=object),
            "reason": np.array([row["reason"] for row in rows], dtype=object),
            "label": np.array(labels, dtype=object),
        }

    def records(self, batch: dict[str, np.ndarray]) -> tuple[list[dict[str, Any]], list[str]]:
        """The records of a batch, and the label each scored file counts under ("" if rejected)."""
        ok = batch["status"] == records.OK
        images = batch["image"][ok]
        answers = iter(self.predictor.predict({"image": images}, self.embed) if len(images) else [])
        facts = iter(zip(*(stat.tolist() for stat in records.input_facts(images)), strict=True))
        model = self.predictor.info
        common = {
            "source": "batch",
            "scored_at": records.now(),
            "model_name": model.name,
            "model_version": model.version,
            "run_id": model.run_id,
            "dataset_version": model.dataset_version,
        }
        rows, labels = [], []
        for i, accepted in enumerate(ok):
            row = {**common, **{name: batch[name][i] for name in (*FILE_COLUMNS, *SIZE_COLUMNS)}}
            label = ""
            if accepted:
                answer, (mean, std) = next(answers), next(facts)
                row |= {**records.answer_columns(answer), "input_mean": mean, "input_std": std}
                label = self.predictor.spec.task.metric_label(answer)
            rows.append(row)
            labels.append(label)
        return rows, labels


def _track(uri: str, cfg: LensopsConfig, source: str, outcome: BatchOutcome) -> str:
    model = outcome.model
    tags = {"lensops.stage": "batch-predict", "lensops.output": outcome.output}
    run_id = runs.create_run(uri, cfg.tracking.experiment, "batch-predict", tags)
    with runs.closing(uri, run_id):
        params = {"source": source, "output": outcome.output, **{f"model_{k}": v for k, v in model.as_dict().items()}}
        runs.log_params(uri, run_id, params | {f"batch.{k}": v for k, v in cfg.batch.model_dump().items()})
        counts = {name: outcome.summary()[name] for name in ("files", "scored", "already_scored", "rejected")}
        counts |= {f"predicted_{label}": n for label, n in outcome.predictions.items()}
        counts |= {f"rejected_{reason}": n for reason, n in outcome.rejected.items()}
        runs.log_metrics(uri, run_id, counts)
        runs.log_dict(uri, run_id, outcome.summary(), "batch/summary.json")
    return run_id
