"""Where alerts go: Alertmanager's configuration, rendered from the environment.

Alertmanager reads no environment variables, and a receiver's address or an SMTP password
has no place in a file under version control. ``lensops alertmanager-config`` therefore
writes the configuration at start-up from ``LENSOPS_ALERT_*`` variables (the compose stack
runs it before Alertmanager starts): a webhook (any URL: a chat bridge, an incident tool, a
team's own service) and e-mail through an SMTP relay, either or both.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

PREFIX = "LENSOPS_ALERT_"
RECEIVER = "lensops-team"


class AlertReceivers(BaseModel):
    """Who hears of an alert; each field is the variable ``LENSOPS_ALERT_<FIELD>``."""

    model_config = ConfigDict(extra="forbid")

    webhook_url: str | None = None
    """Alertmanager POSTs each group of alerts to it as JSON (its webhook format)."""
    email_to: str | None = None
    """Comma-separated addresses; needs ``email_from`` and ``smtp_smarthost``."""
    email_from: str | None = None
    smtp_smarthost: str | None = None
    """The relay as ``host:port``."""
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_require_tls: bool = True
    group_wait: str = "30s"
    """How long Alertmanager gathers alerts of a new group before the first notification."""
    group_interval: str = "5m"
    repeat_interval: str = "4h"
    """How often a notification is sent again while its alerts keep firing."""

    @model_validator(mode="after")
    def _complete_email(self) -> AlertReceivers:
        if self.email_to and not (self.email_from and self.smtp_smarthost):
            raise ValueError(
                f"{PREFIX}EMAIL_TO needs {PREFIX}EMAIL_FROM and {PREFIX}SMTP_SMARTHOST (the relay, host:port)"
            )
        return self

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> AlertReceivers:
        """The receivers the environment names; unset and empty variables keep their default."""
        named = {name: env.get(f"{PREFIX}{name.upper()}") for name in cls.model_fields}
        return cls.model_validate({name: value for name, value in named.items() if value})

    @property
    def configured(self) -> bool:
        return bool(self.webhook_url or self.email_to)


def alertmanager_config(receivers: AlertReceivers) -> dict[str, Any]:
    """Alertmanager's configuration: every alert to one receiver, grouped per alert and application,
    resolved ones too. With no receiver set, alerts are only shown in Alertmanager's own UI."""
    receiver: dict[str, Any] = {"name": RECEIVER}
    config: dict[str, Any] = {}
    if receivers.webhook_url:
        receiver["webhook_configs"] = [{"url": receivers.webhook_url, "send_resolved": True}]
    if receivers.email_to:
        receiver["email_configs"] = [{"to": receivers.email_to, "send_resolved": True}]
        config["global"] = _smtp(receivers)
    config["route"] = {
        "receiver": RECEIVER,
        "group_by": ["alertname", "application"],
        "group_wait": receivers.group_wait,
        "group_interval": receivers.group_interval,
        "repeat_interval": receivers.repeat_interval,
    }
    config["receivers"] = [receiver]
    return config


def _smtp(receivers: AlertReceivers) -> dict[str, Any]:
    smtp: dict[str, Any] = {
        "smtp_from": receivers.email_from,
        "smtp_smarthost": receivers.smtp_smarthost,
        "smtp_require_tls": receivers.smtp_require_tls,
    }
    if receivers.smtp_username:
        smtp |= {"smtp_auth_username": receivers.smtp_username, "smtp_auth_password": receivers.smtp_password}
    return smtp
