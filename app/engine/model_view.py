"""One model of a several-model :class:`app.engine.runner.Engine`, with the single-model API
the pipeline, services and workers use (they never name the model: the view does)."""

from __future__ import annotations

import contextlib
from concurrent.futures import Future
from typing import TYPE_CHECKING

from app.engine.base import Embedding, EngineInput, ModelInfo, Prepared
from app.engine.scheduler import INTERACTIVE

if TYPE_CHECKING:
    from app.engine.runner import Announcement, Engine


class ModelView:
    def __init__(self, engine: Engine, name: str) -> None:
        self.engine = engine
        self.name = name

    @property
    def ready(self) -> bool:
        return self.engine.ready

    @property
    def load_error(self) -> BaseException | None:
        return self.engine.load_error

    @property
    def memory_bytes(self) -> int | None:
        """MLX memory this model took at load (None if unknown)."""
        return self.engine.models.memory.get(self.name)

    @property
    def info(self) -> ModelInfo:
        return self.engine.info_of(self.name)

    def prepare(self, item: EngineInput, *, truncate: bool = False) -> Prepared:
        return self.engine.prepare(item, truncate=truncate, model=self.name)

    def measure(self, item: EngineInput, *, truncate: bool = False) -> Prepared:
        return self.engine.measure(item, truncate=truncate, model=self.name)

    def incoming(self, n: int, lane: str = INTERACTIVE) -> contextlib.AbstractContextManager:
        return self.engine.incoming(n, lane)

    def submit(
        self,
        items: list[Prepared],
        announced: Announcement | None = None,
        *,
        lane: str = INTERACTIVE,
        owner: object = None,
    ) -> Future:
        return self.engine.submit(items, announced, lane=lane, owner=owner, model=self.name)

    async def wait(self, fut: Future) -> list[Embedding]:
        return await self.engine.wait(fut)

    def embed_blocking(
        self, items: list[Prepared], timeout: float | None = None, *, lane: str = INTERACTIVE
    ) -> list[Embedding]:
        return self.engine.embed_blocking(items, timeout, lane=lane, model=self.name)
