"""Where the router finds versions: the MLflow registry, and the model tier that warms them."""

from __future__ import annotations

import asyncio
import os

from ray.serve.handle import DeploymentHandle

from lensops.model.artifact import ModelSpec
from lensops.tracking import registry
from lensops.tracking.registry import RegisteredVersion

FAIL_FAST = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


class RegistryVersions:
    """:class:`lensops.serving.router.Versions` over the registry and the ``Model`` deployment."""

    def __init__(self, uri: str, name: str, model: DeploymentHandle):
        self.uri, self.name, self.model = uri, name, model
        self.specs: dict[str, ModelSpec] = {}
        # A read of an unreachable registry should fail in seconds, and the watch try again later
        # (with backoff), rather than hold the watch for MLflow's default minutes of retries.
        for variable, value in FAIL_FAST.items():
            os.environ.setdefault(variable, value)

    async def find(self, ref: str) -> RegisteredVersion | None:
        return await asyncio.to_thread(registry.find, self.uri, self.name, ref)

    async def load_spec(self, found: RegisteredVersion) -> ModelSpec:
        return await asyncio.to_thread(registry.load_spec, self.uri, found)

    async def spec_of(self, version: str) -> ModelSpec:
        """The spec of a version by number, read once per replica (a version never changes)."""
        if version not in self.specs:
            found = await self.find(version)
            if found is None:
                raise LookupError(f"registered model '{self.name}' has no version {version}")
            self.specs[version] = await self.load_spec(found)
        return self.specs[version]

    async def warm(self, version: str) -> None:
        """Load the version on a model replica before it gets traffic."""
        await self.model.options(multiplexed_model_id=version).describe.remote()
