"""The Redis side of a running server: the Redis handle (external, embedded or fakeredis), the
embedding cache, the job client and the in-process worker, and the supervisor that restarts an
embedded redis-server that died.

Redis starts with the server (from the main thread, so Linux's parent-death signal applies);
the job clients and the local worker need the models' fingerprints (one queue per model setup),
so they start once the engine has loaded its models. Until then (or when Redis is unreachable)
job routes answer 503. One local worker serves the queues of every model the server holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from app.cache import EmbeddingCache
from app.errors import ModelNotReady
from app.jobs.client import JobClient
from app.redis_embedded import RedisHandle, mask_url, restart_embedded, start_redis
from app.settings import Settings

log = logging.getLogger(__name__)


class Backends:
    def __init__(self, settings: Settings, handle: RedisHandle) -> None:
        self.settings = settings
        self.handle = handle
        self.cache = EmbeddingCache.from_settings(handle, settings)
        self.job_clients: dict[str, JobClient] = {}  # served model name -> its job client
        self.local_worker: Any = None
        self.redis_restarts = 0
        self._tasks: list[asyncio.Task] = []

    @classmethod
    def start(cls, settings: Settings) -> Backends:
        handle = start_redis(settings)
        log.info("redis: %s (%s)", handle.kind, mask_url(handle.url))
        return cls(settings, handle)

    # ---- lifecycle (inside the server's event loop) ----------------------------------------------
    async def attach(self, engine: Any) -> None:
        """Start the job client and the local worker once ``engine`` has loaded its model,
        and supervise an embedded redis-server."""
        self._tasks.append(asyncio.create_task(self._attach_when_ready(engine)))
        if self.handle.kind == "embedded":
            self._tasks.append(asyncio.create_task(self._supervise_redis()))

    @property
    def jobs(self) -> JobClient | None:
        """The first model's job client (None until the models have loaded)."""
        return next(iter(self.job_clients.values()), None)

    def jobs_for(self, model: str) -> JobClient | None:
        return self.job_clients.get(model)

    async def _attach_when_ready(self, engine: Any) -> None:
        while not engine.ready:
            if engine.load_error is not None:
                return
            await asyncio.sleep(0.05)
        clients = {
            s.model_name: JobClient(self.handle, s, engine.info_of(s.model_name).fingerprint)
            for s in self.settings.per_model()
        }
        if not self.settings.local_worker:
            self.job_clients = clients
            return
        from app.jobs.worker import LocalWorker, model_queues

        views = model_queues(engine, self.settings)
        failing = False
        while True:
            worker = LocalWorker(views, self.handle, self.settings)
            self.local_worker = worker  # stopped by close(), registered or not
            try:
                await worker.start()
                self.job_clients = clients
                return
            except RuntimeError as exc:  # Redis unreachable: the jobs API says so meanwhile
                self.job_clients = clients
                if not failing:
                    log.warning("%s; retrying every 2 s", exc)
                failing = True
            await asyncio.sleep(2.0)

    async def _supervise_redis(self) -> None:
        """Restart the embedded redis-server on its data dir (AOF) when it dies, with backoff."""
        delay = 0.5
        while True:
            await asyncio.sleep(0.5)
            if self.handle.alive():
                delay = 0.5
                continue
            log.warning("the embedded redis-server exited; restarting it in %.1f s", delay)
            await asyncio.sleep(delay)
            try:
                await asyncio.to_thread(restart_embedded, self.handle)
                self.redis_restarts += 1
                log.info("embedded redis-server restarted (%d restarts)", self.redis_restarts)
            except Exception as exc:
                log.error("could not restart the embedded redis-server: %s", exc)
                delay = min(30.0, delay * 2)

    def job_client(self, model: str | None = None) -> JobClient:
        jobs = self.jobs if model is None else self.job_clients.get(model)
        if jobs is None:
            raise ModelNotReady(
                "the model is still loading; the jobs API opens when it is ready",
                headers={"Retry-After": "2"},
            )
        return jobs

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.local_worker is not None:
            await asyncio.to_thread(self.local_worker.stop)
        for jobs in self.job_clients.values():
            await jobs.close()
        with contextlib.suppress(Exception):
            await self.cache.close()

    def stop_redis(self) -> None:
        """Stop an embedded redis-server (after the server stopped serving)."""
        self.handle.stop()

    # ---- health --------------------------------------------------------------------------------
    async def health(self) -> tuple[bool, dict[str, Any]]:
        """Redis and worker status for GET /health. Redis being down does not make the server
        unhealthy (inline requests still work, uncached), but the jobs API says so. Not ready
        until the jobs API is open and the local worker is registered."""
        redis_info: dict[str, Any] = {"kind": self.handle.kind, "status": "ok"}
        if self.handle.kind == "embedded":
            redis_info["restarts"] = self.redis_restarts
        info: dict[str, Any] = {"redis": redis_info}
        jobs = self.jobs
        alive: dict[str, int] = {}
        try:
            for name, client in self.job_clients.items():
                alive[name] = await asyncio.to_thread(client.workers)
        except Exception as exc:
            redis_info["status"] = f"unreachable: {type(exc).__name__}"
            alive = {}
        workers = next(iter(alive.values()), None)  # the first model's
        if jobs is None:
            info["jobs_api"] = "starting"
        else:
            info["jobs_api"] = "open" if workers is not None else "unavailable"
        info["workers"] = {"queue": jobs.queue if jobs else None, "alive": workers}
        if len(self.job_clients) > 1:  # each model's queue and its live workers
            info["workers"]["models"] = {
                name: {"queue": c.queue, "alive": alive.get(name)}
                for name, c in self.job_clients.items()
            }
        local = self.local_worker
        info["local_worker"] = bool(local is not None and local.registered and local.alive)
        info["cache"] = {"enabled": self.cache.enabled, **self.cache.stats.as_dict()}
        ready = jobs is not None and (
            not self.settings.local_worker or info["local_worker"] or workers is None
        )
        if not ready:
            info["status"] = "starting"
        return ready, info
