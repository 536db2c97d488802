"""Where a monitor's decision goes, checked before a pass runs: light to import, so that the
command line refuses a setting it cannot act on before Ray, MLflow or torch load."""

from __future__ import annotations

from dataclasses import dataclass

from lensops.config import ConfigError, LensopsConfig


@dataclass(frozen=True)
class Targets:
    """Where a decision goes: a Pushgateway, an Alertmanager, a Ray cluster's Jobs API."""

    pushgateway: str | None = None
    alertmanager: str | None = None
    jobs_address: str = "http://127.0.0.1:8265"


def require(cfg: LensopsConfig, targets: Targets) -> None:
    """``ConfigError`` when ``monitor.on_drift`` cannot be done with these settings: said
    before a pass runs, not after it has decided drift."""
    if cfg.monitor.on_drift == "notify" and not targets.alertmanager:
        raise ConfigError("--on-drift notify needs --alertmanager (or $LENSOPS_ALERTMANAGER_URL)")
    if cfg.monitor.on_drift == "retrain" and not cfg.monitor.retrain_data:
        raise ConfigError("--on-drift retrain needs labelled data to train on: --retrain-data or monitor.retrain_data")
