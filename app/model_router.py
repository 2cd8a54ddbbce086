"""The models one server holds (``--model`` repeated): an :class:`EmbeddingService` per served
name, and the routing of each request by its ``model``. Jobs are read through any model's
client (one Redis store) and answered by the service of the model that ran them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from app.errors import ModelNotFound
from app.protocol import EmbeddingRequest
from app.service import EmbeddingResult, EmbeddingService


class ModelRouter:
    def __init__(self, services: dict[str, EmbeddingService]) -> None:
        if not services:
            raise ValueError("a server needs at least one model")
        self.services = services
        self.first = next(iter(services.values()))

    def __iter__(self) -> Iterator[EmbeddingService]:
        return iter(self.services.values())

    def for_model(self, model: str) -> EmbeddingService:
        service = self.services.get(model)
        if service is None:
            serves = ", ".join(repr(n) for n in self.services)
            raise ModelNotFound(
                f"the model {model!r} does not exist on this server; it serves {serves}",
                param="model",
            )
        return service

    async def embed(self, req: EmbeddingRequest, **kw: Any) -> EmbeddingResult:
        return await self.for_model(req.model).embed(req, **kw)

    async def submit_job(self, req: EmbeddingRequest, **kw: Any) -> dict[str, Any]:
        return await self.for_model(req.model).submit_job(req, **kw)

    async def job_status(self, job_id: str, owner: str = "") -> dict[str, Any]:
        return await self.first.job_status(job_id, owner)

    async def cancel_job(self, job_id: str, owner: str = "") -> dict[str, Any]:
        return await self.first.cancel_job(job_id, owner)

    async def job_result(
        self, job_id: str, encoding_format: str | None, owner: str = ""
    ) -> EmbeddingResult:
        status = await self.first.job_status(job_id, owner)
        service = self.services.get(status.get("model", ""), self.first)
        return await service.job_result(job_id, encoding_format, owner)
