"""The Redis side of a running server: the Redis handle (external, embedded or fakeredis), the
embedding cache, the job store and the in-process worker.

Redis starts with the server (from the main thread, so Linux's parent-death signal applies);
the job store and the local worker need the model's fingerprint, so they start once the engine
has loaded the model. Until then (or when Redis is unreachable) job routes answer 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from app.cache import EmbeddingCache
from app.errors import ModelNotReady
from app.jobs import JobStore, live_workers
from app.redis_embedded import RedisHandle, mask_url, start_redis
from app.settings import Settings

log = logging.getLogger(__name__)


class Backends:
    def __init__(self, settings: Settings, handle: RedisHandle) -> None:
        self.settings = settings
        self.handle = handle
        self.cache = EmbeddingCache.from_settings(handle, settings)
        self.jobs: JobStore | None = None
        self.local_worker: Any = None
        self._waiter: asyncio.Task | None = None
        self._health_client: Any = None

    @classmethod
    def start(cls, settings: Settings) -> Backends:
        handle = start_redis(settings)
        log.info("redis: %s (%s)", handle.kind, mask_url(handle.url))
        return cls(settings, handle)

    # ---- lifecycle (inside the server's event loop) ----------------------------------------------
    async def attach(self, engine: Any) -> None:
        """Start the job store and the local worker once ``engine`` has loaded its model."""
        self._waiter = asyncio.create_task(self._attach_when_ready(engine), name="backends-attach")

    async def _attach_when_ready(self, engine: Any) -> None:
        while not engine.ready:
            if engine.load_error is not None:
                return
            await asyncio.sleep(0.05)
        jobs = JobStore(self.handle, self.settings, engine.info.fingerprint)
        await jobs.start()
        self.jobs = jobs
        if self.settings.local_worker:
            from workers.local import LocalWorker

            self.local_worker = await asyncio.to_thread(
                LocalWorker(self.handle, self.settings, engine).start
            )

    def job_store(self) -> JobStore:
        if self.jobs is None:
            raise ModelNotReady(
                "the model is still loading; the jobs API opens when it is ready",
                headers={"Retry-After": "2"},
            )
        return self.jobs

    async def close(self) -> None:
        if self._waiter is not None:
            self._waiter.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._waiter
        if self.local_worker is not None:
            await asyncio.to_thread(self.local_worker.stop)
        if self.jobs is not None:
            await self.jobs.close()
        with contextlib.suppress(Exception):
            await self.cache.close()

    def stop_redis(self) -> None:
        """Stop an embedded redis-server (after the server stopped serving)."""
        self.handle.stop()

    # ---- health --------------------------------------------------------------------------------
    async def health(self) -> tuple[bool, dict[str, Any]]:
        """Redis and worker status for GET /health. Redis being down does not make the server
        unhealthy: inline requests still work (uncached). Not healthy until the jobs API is
        open (it opens right after the model has loaded)."""
        info: dict[str, Any] = {"redis": {"kind": self.handle.kind, "status": "ok"}}
        info["jobs_api"] = "open" if self.jobs is not None else "starting"
        if self.jobs is None:
            info["status"] = "starting"
        try:
            if self._health_client is None:
                self._health_client = self.handle.sync_client(socket_timeout=2.0)
            workers = await asyncio.to_thread(
                _workers_for, self._health_client, self.settings.queue_name
            )
            info["workers"] = {"queue": self.settings.queue_name, "alive": workers}
        except Exception as exc:
            info["redis"]["status"] = f"unreachable: {type(exc).__name__}"
            info["workers"] = {"queue": self.settings.queue_name, "alive": None}
        info["local_worker"] = bool(self.local_worker is not None and self.local_worker.alive)
        info["cache"] = {"enabled": self.cache.enabled, **self.cache.stats.as_dict()}
        return self.jobs is not None, info


def _workers_for(client: Any, queue: str) -> int:
    client.ping()
    return len(live_workers(client, queue))
