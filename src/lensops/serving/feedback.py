"""``POST /feedback``: the truth about a logged prediction, checked, recorded and counted.

The prediction is looked up first in this replica's unwritten records, then in the store
(newest day first). The truth is checked by the task of the version that made the prediction
(a label it knows, or a number), recorded in the log's store before the answer (a 200 means
it is stored), and counted per version as the task's live metric (accuracy, absolute error).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from lensops.monitoring import feedback, store
from lensops.monitoring.log_writer import PredictionLog
from lensops.serving.errors import ApiError
from lensops.serving.metrics import IngressMetrics
from lensops.serving.versions import RegistryVersions


class FeedbackDesk:
    def __init__(self, log: PredictionLog | None, versions: RegistryVersions, metrics: IngressMetrics):
        self.log, self.versions, self.metrics = log, versions, metrics

    async def record(self, request_id: str, truth: str | float) -> dict[str, Any]:
        """Store ``truth`` for the prediction logged under ``request_id``; what it was judged against."""
        if self.log is None:
            raise ApiError("feedback_disabled", "this service keeps no prediction log (serve.log_path is not set)")
        logged = await self._logged(request_id)
        try:
            spec = await self.versions.spec_of(logged["model_version"])
        except LookupError as exc:
            raise ApiError("no_such_version", str(exc)) from None
        try:
            target = spec.task.target_of(truth, spec.classes)
        except ValueError as exc:
            raise ApiError("unknown_label", str(exc)) from None
        try:
            await asyncio.to_thread(store.write_feedback, self.log.settings.location, feedback.row(logged, truth))
        except OSError as exc:
            raise ApiError("log_unavailable", f"cannot store the feedback: {exc}") from None
        score = spec.task.live_score(logged, target, spec.classes)
        self.metrics.judged(logged["model_version"], spec.task.live_metric or "", score)
        return {
            "request_id": request_id,
            "model": {"name": logged["model_name"], "version": logged["model_version"]},
            "prediction": _prediction(logged),
            "metric": spec.task.live_metric,
            "score": score,
        }

    async def _logged(self, request_id: str) -> Mapping[str, Any]:
        waiting = self.log.find(request_id)
        if waiting is not None:
            return waiting
        try:
            found = await asyncio.to_thread(store.find_prediction, self.log.settings.location, request_id)
        except OSError as exc:
            raise ApiError("log_unavailable", f"cannot read the prediction log: {exc}") from None
        if found is None:
            raise ApiError(
                "unknown_request",
                f"no logged prediction has the request id '{request_id}' (answers reach the log within "
                "serve.log_flush_s seconds; requests left out by serve.log_sample_rate are not logged)",
            )
        return found


def _prediction(logged: Mapping[str, Any]) -> str | float:
    return logged["value"] if logged["value"] is not None else logged["prediction"]
