"""Custom Prometheus metrics of the service (``ray.serve.metrics``), next to Serve's own.

Ray exports them on every node's metrics port (``ray start --metrics-export-port``); the
names below are prefixed ``ray_`` there, e.g. ``ray_lensops_predictions_total``.
"""

from __future__ import annotations

from ray.serve.metrics import Counter, Gauge, Histogram

LATENCY_MS = [5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000]
CONFIDENCE = [0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99]
BATCH_SIZES = [1, 2, 4, 8, 16, 32, 64]


class IngressMetrics:
    def __init__(self) -> None:
        self.predictions = Counter(
            "lensops_predictions_total",
            description="Answered predictions by model version and predicted label.",
            tag_keys=("model_version", "label"),
        )
        self.rejections = Counter(
            "lensops_rejected_inputs_total",
            description="Requests answered with an error, by code (bad inputs, and overloaded or rate_limited).",
            tag_keys=("reason",),
        )
        self.latency = Histogram(
            "lensops_request_latency_ms",
            description="Preprocess + model latency per image.",
            boundaries=LATENCY_MS,
            tag_keys=("model_version",),
        )
        self.confidence = Histogram(
            "lensops_confidence",
            description="Confidence of answered classifications.",
            boundaries=CONFIDENCE,
            tag_keys=("model_version",),
        )
        self.version = Gauge("lensops_active_model_version", description="Version the ingress routes to.")
        self.challenger = Gauge(
            "lensops_challenger_model_version", description="Version getting challenger traffic; 0 when none."
        )
        self.shadow = Counter(
            "lensops_shadow_predictions_total",
            description="Challenger predictions in shadow mode, by version and agreement with the champion.",
            tag_keys=("model_version", "champion_version", "agreement"),
        )
        self.shadow_errors = Counter(
            "lensops_shadow_errors_total",
            description="Shadow predictions that failed (never seen by clients).",
            tag_keys=("model_version",),
        )
        self.retries = Counter(
            "lensops_tier_retries_total",
            description="Calls to a tier tried again because its replica died or was unavailable.",
            tag_keys=("tier",),
        )
        self.refresh_failures = Counter(
            "lensops_model_refresh_failures_total",
            description="Failed attempts to follow the model aliases, by reason; the loaded version keeps answering.",
            tag_keys=("reason",),
        )

    def answered(self, version: str, label: str, confidence: float | None, seconds: float) -> None:
        self.predictions.inc(tags={"model_version": version, "label": label})
        self.latency.observe(seconds * 1000, tags={"model_version": version})
        if confidence is not None:
            self.confidence.observe(confidence, tags={"model_version": version})

    def rejected(self, reason: str) -> None:
        self.rejections.inc(tags={"reason": reason})

    def active(self, version: str, challenger: str | None) -> None:
        self.version.set(float(version))
        self.challenger.set(float(challenger or 0))

    def retried(self, tier: str) -> None:
        self.retries.inc(tags={"tier": tier})

    def refresh_failed(self, code: str) -> None:
        self.refresh_failures.inc(tags={"reason": code})

    def shadowed(self, version: str, champion_version: str, agrees: bool | None) -> None:
        """A shadow prediction and whether it agreed with the champion (None: it failed)."""
        if agrees is None:
            self.shadow_errors.inc(tags={"model_version": version})
            return
        agreement = "agree" if agrees else "disagree"
        self.shadow.inc(tags={"model_version": version, "champion_version": champion_version, "agreement": agreement})


class ModelMetrics:
    def __init__(self) -> None:
        self.batch_size = Histogram(
            "lensops_batch_size",
            description="Images per model call.",
            boundaries=BATCH_SIZES,
            tag_keys=("model_version",),
        )
        self.latency = Histogram(
            "lensops_model_latency_ms",
            description="Model forward latency per batch.",
            boundaries=LATENCY_MS,
            tag_keys=("model_version",),
        )
        self.loads = Counter(
            "lensops_model_loads_total", description="Model versions loaded by a replica.", tag_keys=("model_version",)
        )

    def batch(self, version: str, size: int, seconds: float) -> None:
        self.batch_size.observe(size, tags={"model_version": version})
        self.latency.observe(seconds * 1000, tags={"model_version": version})

    def loaded(self, version: str) -> None:
        self.loads.inc(tags={"model_version": version})
