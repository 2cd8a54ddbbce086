"""The MLX worker: an RQ ``SimpleWorker`` (no fork: the model is loaded once per process) that
runs chunks through the embed pipeline, in ``mlx-embeddings-worker`` or on a thread of the
server (sharing its loaded model).

Fast failover with RQ's own machinery. RQ's SimpleWorker never heartbeats during a job and
gives a started job ``timeout + 60 s`` in the ``StartedJobRegistry``; this worker gives it
``lease`` seconds and renews them from a side thread with RQ's ``maintain_heartbeats`` while
the chunk computes, and runs RQ's registry maintenance every ``maintenance_interval``. A killed
worker's chunk so expires after ``lease`` seconds, and the next maintenance of any live worker
retries it (RQ's ``StartedJobRegistry.cleanup``).

A worker holding several models listens on each model's queue and runs a chunk with the
pipeline of the queue it came from.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from rq import Queue, SimpleWorker, Worker, get_current_job
from rq.exceptions import StopRequested
from rq.timeouts import TimerDeathPenalty
from rq.worker import DequeueStrategy

from app.cache import CachePolicy, EmbeddingCache, encode_embedding
from app.engine.runner import BULK
from app.errors import ApiError, ModelNotReady, Overloaded, error_record
from app.jobs import store
from app.jobs.chunks import queue_name
from app.jobs.items import JobItem
from app.pipeline import Pipeline

log = logging.getLogger(__name__)

_context: contextvars.ContextVar[WorkerContext] = contextvars.ContextVar("mlxemb_worker")


class WorkerContext:
    """What a chunk needs: the pipeline over the loaded engine, and an event loop of this
    worker's own to run it on."""

    def __init__(self, engine: Any, handle: Any, settings: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.pipeline = Pipeline(engine, EmbeddingCache.from_settings(handle, settings))
        self.timeout = settings.job_timeout

    def run(self, make: Callable[[], Awaitable[Any]]) -> Any:
        """Run the pipeline, waiting out a full engine queue or a still-loading model."""
        deadline, delay = time.monotonic() + self.timeout, 0.05
        while True:
            try:
                return self.loop.run_until_complete(make())
            except (Overloaded, ModelNotReady):
                if time.monotonic() + delay > deadline:
                    raise
                time.sleep(delay)
                delay = min(1.0, delay * 2)

    def close(self) -> None:
        self.loop.run_until_complete(self.pipeline.cache.close())
        self.loop.close()


def embed_chunk(job_id: str, start: int, items: list[JobItem], options: dict) -> str:
    """The RQ job function of one chunk: the embed pipeline over its items, then its output
    stored. A caller's mistake (a bad item) fails the job at once; anything else raises, for
    RQ to retry."""
    job, context = get_current_job(), _context.get()
    assert job is not None
    r = job.connection
    if not store.begin_chunk(r, job_id):
        return "skipped"  # cancelled or failed meanwhile
    policy = CachePolicy(read=options.get("cache_read", True), write=True)
    try:
        inputs = [it.to_input() for it in items]
        params, keys = [it.param for it in items], [it.key for it in items]
        truncate = bool(options.get("truncate"))
        embeddings = context.run(
            lambda: context.pipeline.run(
                inputs, params, keys, policy, truncate=truncate, lane=BULK, owner=job_id
            )
        )
    except ApiError as exc:
        if exc.status >= 500:
            raise
        store.fail(r, job_id, error_record(exc))
        return "failed"
    store.finish_chunk(r, job_id, start, [encode_embedding(e) for e in embeddings])
    return "done"


class _QuietRQ(logging.Filter):
    """RQ logs "could not connect" on every retry: keep the first, until Redis is back. Its
    registry maintenance (every couple of seconds here) is logged only at debug."""

    down = False

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "cleaning registries" in message or "cleaning group registries" in message:
            return logging.getLogger("rq.worker").isEnabledFor(logging.DEBUG)
        if "could not connect to Redis" not in message:
            return True
        first, self.down = not self.down, True
        return first


class EmbedWorker(SimpleWorker):
    max_connection_wait_time = 2.0  # back within 2 s of Redis (RQ's default backs off to 60 s)

    def __init__(
        self,
        queues: list[Queue],
        *,
        contexts: Mapping[str, WorkerContext],
        lease: float,
        beat_interval: float,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("worker_ttl", 16)  # dequeue in 1 s steps: maintenance keeps pace
        kwargs.setdefault("maintenance_interval", max(1, int(lease // 4)))
        super().__init__(queues, **kwargs)
        self.contexts = dict(contexts)  # queue name -> the pipeline of its model
        self.lease = max(2, int(lease))
        self.beat_interval = beat_interval
        self.born = threading.Event()
        self._down_filter = _QuietRQ()
        self.log.addFilter(self._down_filter)

    @classmethod
    def for_models(cls, engines: Mapping[str, Any], handle: Any, settings: Any, name: str):
        """A worker on each queue of ``engines`` (queue name -> that model's engine view)."""
        conn = handle.sync_client()
        contexts = {q: WorkerContext(engine, handle, settings) for q, engine in engines.items()}
        return cls([Queue(q, connection=conn) for q in engines], connection=conn, name=name,
                   contexts=contexts, lease=settings.job_lease,
                   beat_interval=settings.job_beat_interval)  # fmt: skip

    def close(self) -> None:
        for context in self.contexts.values():
            context.close()

    def work(self, *args: Any, **kwargs: Any) -> bool:
        # Several models' queues take turns (RQ's default always drains the first one first).
        kwargs.setdefault("dequeue_strategy", DequeueStrategy.ROUND_ROBIN)
        return super().work(*args, **kwargs)

    def get_heartbeat_ttl(self, job: Any, working_time: float = 0.0) -> int:
        return self.lease

    # RQ keeps an execution in the job's ExecutionRegistry 60 s longer than the heartbeat TTL it
    # gives the execution's own hash; with a short lease that hash expires first, and deleting
    # the job after a retry (result_ttl=0) then fails on the dead execution ("Execution ... not
    # found in Redis"). The hash outlives the registry entry here.
    def prepare_execution(self, job: Any) -> Any:
        execution = super().prepare_execution(job)
        self.connection.expire(execution.key, self.lease + 120)
        return execution

    def maintain_heartbeats(self, job: Any, execution: Any) -> None:
        super().maintain_heartbeats(job, execution)
        self.connection.expire(execution.key, self.lease + 120)

    def register_birth(self) -> None:
        super().register_birth()
        self.born.set()

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        super().heartbeat(timeout, pipeline)
        if pipeline is None and self._down_filter.down:
            self._down_filter.down = False
            self.log.info("Worker %s: Redis is reachable again", self.name)

    def perform_job(self, job: Any, queue: Queue, execution: Any) -> bool:
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(self.beat_interval):
                try:
                    self.maintain_heartbeats(job, execution)
                except Exception as exc:  # Redis away for a moment: the lease tells
                    log.debug("heartbeat failed: %s", exc)

        beater = threading.Thread(target=beat, name=f"beat-{self.name}", daemon=True)
        token = _context.set(self.contexts[queue.name])
        beater.start()
        try:
            return super().perform_job(job, queue, execution)
        finally:
            stop.set()
            beater.join(2.0)
            _context.reset(token)


class ThreadWorker(EmbedWorker):
    """The server's in-process worker: no signal handlers (not the main thread), a timer
    death penalty instead of SIGALRM, and a stop flag seen within a second."""

    death_penalty_class = TimerDeathPenalty

    def _install_signal_handlers(self) -> None:
        pass

    def dequeue_job_and_maintain_ttl(self, timeout: int | None, max_idle_time: int | None = None):
        while not self._stop_requested:
            result = super().dequeue_job_and_maintain_ttl(timeout, max_idle_time=1)
            if result is not None:
                return result
        raise StopRequested()


def model_queues(engine: Any, settings: Any) -> dict[str, Any]:
    """Each model's queue -> its engine view, for the models of ``settings`` (loaded)."""
    views = [engine.view(s.model_name) for s in settings.per_model()]
    return {queue_name(settings.queue_name, v.info.fingerprint): v for v in views}


def worker_name(kind: str) -> str:
    return f"{kind}-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


def live_workers(r: redis.Redis, queue: str | None, lease: float) -> list[Worker]:
    """RQ's registered workers (of ``queue``, or all) that heartbeat within ``lease`` s."""
    cutoff = datetime.now(UTC) - timedelta(seconds=lease)
    workers = Worker.all(connection=r, queue=Queue(queue, connection=r) if queue else None)
    return [w for w in workers if w.last_heartbeat and _aware(w.last_heartbeat) >= cutoff]


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=UTC)


class LocalWorker:
    """A ThreadWorker on its own thread, sharing the server's engine (``engines``: queue name
    -> that model's engine view)."""

    def __init__(self, engines: Mapping[str, Any], handle: Any, settings: Any) -> None:
        self.queues = list(engines)
        self.worker = ThreadWorker.for_models(engines, handle, settings, worker_name("local"))
        self._thread = threading.Thread(target=self._run, name="rq-local-worker", daemon=True)

    async def start(self) -> LocalWorker:
        """Start it; returns once RQ has registered it (cancellable meanwhile)."""
        self._thread.start()
        while not self.worker.born.is_set():
            if not self._thread.is_alive():
                raise RuntimeError("the local worker stopped before it registered with Redis")
            await asyncio.sleep(0.02)
        log.info("local worker %s serving %s", self.worker.name,
                 ", ".join(repr(q) for q in self.queues))  # fmt: skip
        return self

    def _run(self) -> None:
        try:
            self.worker.work(logging_level=logging.getLevelName(log.getEffectiveLevel()))
        except Exception:
            log.exception("local worker %s crashed", self.worker.name)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def registered(self) -> bool:
        return self.worker.born.is_set()

    def stop(self, timeout: float = 1.5) -> None:
        """Ask the worker to stop (a running chunk is retried elsewhere if we exit first)."""
        self.worker._stop_requested = True
        self._thread.join(timeout)
