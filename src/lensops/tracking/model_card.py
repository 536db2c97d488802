"""The model card a registered version carries as its MLflow description: what the model does,
on which data (and under which licence), how well, and what it is for."""

from __future__ import annotations

from lensops.data.validation import ValidationReport
from lensops.model.artifact import ModelSpec


def model_card(spec: ModelSpec, report: ValidationReport) -> str:
    """Markdown, as the MLflow UI renders a model version's description."""
    rows = {split: sum(counts.values()) for split, counts in report.class_counts.items()}
    metrics = ", ".join(f"{name} {value:.4f}" for name, value in sorted(spec.metrics.items())) or "none yet"
    outputs = ", ".join(spec.classes) if spec.classes else f"a value of {spec.target_column}"
    return "\n".join(
        [
            f"**Task:** {spec.model.task} with {spec.model.architecture} at {spec.preprocess.image_size} px; "
            f"answers: {outputs}.",
            f"**Data:** {report.source}, version {spec.dataset_version}; images per split: "
            + ", ".join(f"{split} {n}" for split, n in rows.items())
            + f"; {len(report.skipped)} files skipped by validation.",
            f"**Data licence:** {spec.data_licence}.",
            f"**Test metrics:** {metrics}.",
            "**Intended use:** images like the training data's (same kind of camera, object and "
            "framing), scored by lensops' service or batch job, or by `mlflow.pyfunc.load_model`; "
            "the drift monitor compares new images with this version's reference profile. "
            "Decisions that matter need a person's review.",
        ]
    )
