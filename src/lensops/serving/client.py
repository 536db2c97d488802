"""A small HTTP client for a running lensops service."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import requests


class ServiceError(RuntimeError):
    """The service could not be reached, or answered with an error."""


def predict_files(url: str, paths: list[Path], timeout_s: float = 120) -> list[dict[str, Any]]:
    """POST the files to ``/predict_batch``; one answer (or error entry) per file, in order."""
    files = [("files", (path.name, path.read_bytes())) for path in paths]
    try:
        response = requests.post(f"{url.rstrip('/')}/predict_batch", files=files, timeout=timeout_s)
    except requests.ConnectionError as exc:
        raise ServiceError(f"no lensops service answers at {url} ({type(exc).__name__})") from exc
    if response.status_code != 200:
        raise ServiceError(f"{url} answered {response.status_code}: {response.text[:500]}")
    return response.json()["results"]


def describe(answer: dict[str, Any]) -> str:
    """One readable line per answer."""
    if "error" in answer:
        return f"rejected: {answer['error']} ({answer['detail']})"
    model = answer["model"]
    confidence = "" if answer["confidence"] is None else f" ({answer['confidence']:.1%})"
    return f"{answer['prediction']}{confidence}  model {model['name']} v{model['version']}"
