"""Where the router finds versions: the MLflow registry, and the model tier that warms them."""

from __future__ import annotations

import asyncio

from ray.serve.handle import DeploymentHandle

from lensops.model.artifact import ModelSpec
from lensops.tracking import registry
from lensops.tracking.registry import RegisteredVersion


class RegistryVersions:
    """:class:`lensops.serving.router.Versions` over the registry and the ``Model`` deployment."""

    def __init__(self, uri: str, name: str, model: DeploymentHandle):
        self.uri, self.name, self.model = uri, name, model

    async def find(self, ref: str) -> RegisteredVersion | None:
        return await asyncio.to_thread(registry.find, self.uri, self.name, ref)

    async def load_spec(self, found: RegisteredVersion) -> ModelSpec:
        return await asyncio.to_thread(registry.load_spec, self.uri, found)

    async def warm(self, version: str) -> None:
        """Load the version on a model replica before it gets traffic."""
        await self.model.options(multiplexed_model_id=version).describe.remote()
