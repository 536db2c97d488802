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

        self.logged = Counter(
            "lensops_prediction_log_rows_total", description="Prediction records written to the prediction log."
        )
        self.flush_latency = Histogram(
            "lensops_prediction_log_flush_ms",
            description="Time to write one flush of the prediction log.",
            boundaries=LATENCY_MS,
        )
        self.log_failures = Counter(
            "lensops_prediction_log_failures_total",
            description="Prediction log flushes that failed (their records wait for the next one).",
        )
        self.dropped = Counter(
            "lensops_prediction_log_dropped_total",
            description="Records dropped because serve.log_max_buffered were already waiting for the store.",
        )
        self.feedback = Counter(
            "lensops_feedback_total",
            description="Ground-truth feedback received, by the version that predicted and the task's live metric.",
            tag_keys=("model_version", "metric"),
        )
        self.feedback_score = Counter(
            "lensops_feedback_score_total",
            description="Sum of the task's live metric (accuracy, absolute error) over feedback; "
            "divided by lensops_feedback_total it is the live metric.",
            tag_keys=("model_version", "metric"),
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

    def log_written(self, rows: int, seconds: float) -> None:
        self.logged.inc(rows)
        self.flush_latency.observe(seconds * 1000)

    def log_failed(self) -> None:
        self.log_failures.inc()

    def log_dropped(self, rows: int) -> None:
        self.dropped.inc(rows)

    def judged(self, version: str, metric: str, score: float) -> None:
        """One piece of feedback about a prediction of ``version``, and its ``metric`` score."""
        self.feedback.inc(tags={"model_version": version, "metric": metric})
        if score > 0:  # a Ray counter only goes up; no series yet reads as a sum of 0
            self.feedback_score.inc(score, tags={"model_version": version, "metric": metric})

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
