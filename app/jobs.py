"""Queued embedding jobs: the store the HTTP layer talks to, the state machine the workers
drive, and the dispatcher that decides between inline compute and a job.

A job is split into chunks of ``--job-chunk-size`` items, one RQ job per chunk, so several
workers share one big job. Redis layout (``P`` = ``mlxemb:``; none of these keys has a TTL, so
``volatile-lru`` never evicts them; :func:`sweep` deletes them ``--job-ttl`` after the end)::

    P job:{id}          hash   status, model, created_at, started_at, finished_at, total,
                               completed, n_chunks, chunks_done, chunk_size, ttl, lease,
                               last_progress, queue, error (JSON), meta (JSON)
    P job:{id}:in       hash   chunk -> encoded items (app.job_items), dropped when done
    P job:{id}:out      hash   item index -> encoded embedding (app.cache codec)
    P job:{id}:chunks   hash   chunk -> {"a": attempt, "s": queued|running|done, "w": worker}
    P job:{id}:beats    hash   chunk -> unix time of the running worker's last heartbeat
    P job:{id}:done     pubsub channel, published on every terminal transition
    P jobs:active       set    ids not yet finished (scanned by the watchdog)
    P jobs:expiry       zset   id -> unix time its keys are deleted
    P workers           hash   worker name -> {"beat", "queue", "model"} presence
    rq:job:{id}-c{chunk}-a{attempt} the RQ job of one chunk attempt (RQ's own keys)

Faults: a chunk whose worker stops beating for ``lease`` seconds is re-enqueued (at most
``MAX_CHUNK_ATTEMPTS`` attempts, then the job fails with a clear error); a job that made no
progress for ``orphan_timeout`` seconds while no worker serves its queue fails; exceptions
inside a chunk are retried by RQ (``Retry(max=2)``). The watchdog runs in the server (a timer
and while waiting) and in every worker, so any live process heals a job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis
import redis.asyncio

from app.cache import (
    KEY_PREFIX,
    decode_embedding,
)
from app.engine.base import Embedding, Prepared
from app.errors import (
    JobFailed,
    JobNotFinished,
    JobNotFound,
    JobTimeout,
    QueueUnavailable,
    rebuild_error,
)
from app.job_items import JobItem, encode_items
from app.settings import Settings

log = logging.getLogger(__name__)

JOB_ID_PREFIX = "embjob_"
CHUNK_FUNC = "workers.tasks.embed_chunk"
MAX_CHUNK_ATTEMPTS = 3  # the first try and two retries
BEAT_INTERVAL = 1.0
DEFAULT_LEASE = 10.0
WORKER_DEAD_AFTER = 10.0
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
ACTIVE = frozenset({"queued", "running"})

ACTIVE_KEY = KEY_PREFIX + "jobs:active"
EXPIRY_KEY = KEY_PREFIX + "jobs:expiry"
WORKERS_KEY = KEY_PREFIX + "workers"
WATCHDOG_LOCK = KEY_PREFIX + "jobs:watchdog-lock"

_REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


def job_key(job_id: str, part: str = "") -> str:
    return f"{KEY_PREFIX}job:{job_id}" + (f":{part}" if part else "")


def rq_job_id(job_id: str, chunk: int, attempt: int) -> str:
    return f"{job_id}-c{chunk}-a{attempt}"


def _s(v: bytes | str | None) -> str:
    return v.decode() if isinstance(v, bytes) else (v or "")


# ---- dispatch decision ---------------------------------------------------------------------
def should_queue(prepared_misses: Sequence[Prepared], settings: Settings) -> bool:
    """More than ``--queue-threshold`` uncached images, or more uncached pixels than
    ``--queue-pixel-budget``, become a job; anything smaller is computed inline."""
    images = [p for p in prepared_misses if p.kind == "image"]
    if not images:
        return False
    if len(images) > settings.queue_threshold:
        return True
    return sum(p.pixels for p in images) > settings.queue_pixel_budget


# ---- status --------------------------------------------------------------------------------
@dataclass
class JobStatus:
    id: str
    status: str
    model: str
    created_at: int
    completed: int
    total: int
    error: dict | None = None
    request_meta: dict = field(default_factory=dict)

    @classmethod
    def from_hash(cls, job_id: str, h: Mapping[bytes, bytes]) -> JobStatus:
        error = _s(h.get(b"error"))
        meta = _s(h.get(b"meta"))
        return cls(
            id=job_id,
            status=_s(h.get(b"status")),
            model=_s(h.get(b"model")),
            created_at=int(float(_s(h.get(b"created_at")) or 0)),
            completed=int(_s(h.get(b"completed")) or 0),
            total=int(_s(h.get(b"total")) or 0),
            error=orjson.loads(error) if error else None,
            request_meta=orjson.loads(meta) if meta else {},
        )

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL

    def to_dict(self) -> dict[str, Any]:
        """The API object; ``error`` is an OpenAI error object (``{"message", "type", ...}``)."""
        return {
            "id": self.id,
            "object": "embedding.job",
            "status": self.status,
            "model": self.model,
            "created_at": self.created_at,
            "progress": {"completed": self.completed, "total": self.total},
            "error": (self.error or {}).get("error") if self.error else None,
        }


# ---- state machine (synchronous: used by workers, and by the server in a thread) -----------
def create_job(
    r: redis.Redis,
    items: Sequence[JobItem],
    *,
    settings: Settings,
    fingerprint: str,
    request_meta: Mapping[str, Any],
    lease: float = DEFAULT_LEASE,
    truncate: bool = False,
) -> str:
    """Write the job and enqueue one RQ job per chunk. Returns the job id."""
    from rq import Queue

    if not items:
        raise ValueError("a job needs at least one item")
    job_id = JOB_ID_PREFIX + secrets.token_urlsafe(24)
    size = max(1, settings.job_chunk_size)
    chunks = [items[i : i + size] for i in range(0, len(items), size)]
    now = time.time()
    meta = dict(request_meta)
    meta.setdefault("truncate", truncate)
    pipe = r.pipeline(transaction=True)
    pipe.hset(
        job_key(job_id),
        mapping={
            "status": "queued",
            "model": settings.model_name,
            "fingerprint": fingerprint,
            "created_at": repr(now),
            "last_progress": repr(now),
            "total": len(items),
            "completed": 0,
            "n_chunks": len(chunks),
            "chunks_done": 0,
            "chunk_size": size,
            "ttl": settings.job_ttl,
            "lease": repr(float(lease)),
            "queue": settings.queue_name,
            "timeout": repr(float(settings.job_timeout)),
            "error": "",
            "meta": orjson.dumps(meta, default=str),
        },
    )
    pipe.hset(
        job_key(job_id, "in"), mapping={str(k): encode_items(c) for k, c in enumerate(chunks)}
    )
    pipe.hset(
        job_key(job_id, "chunks"),
        mapping={str(k): orjson.dumps({"a": 1, "s": "queued"}) for k in range(len(chunks))},
    )
    pipe.sadd(ACTIVE_KEY, job_id)
    pipe.zadd(EXPIRY_KEY, {job_id: now + settings.job_ttl})
    pipe.execute()
    queue = Queue(settings.queue_name, connection=r)
    try:
        queue.enqueue_many(
            [
                _chunk_data(job_id, k, 1, settings.job_timeout, settings.job_ttl)
                for k in range(len(chunks))
            ]
        )
    except Exception as exc:
        fail_job(r, job_id, _error_body(f"could not enqueue the job: {exc}"))
        raise
    return job_id


def _chunk_data(job_id: str, chunk: int, attempt: int, timeout: float, ttl: int) -> Any:
    from rq import Queue, Retry

    return Queue.prepare_data(
        CHUNK_FUNC,
        args=(job_id, chunk, attempt),
        job_id=rq_job_id(job_id, chunk, attempt),
        timeout=int(timeout) + 60,  # the chunk's own timeout fires first, with a clear error
        result_ttl=0,
        failure_ttl=max(60, int(ttl)),
        retry=Retry(max=MAX_CHUNK_ATTEMPTS - 1),
        description=f"embed {job_id} chunk {chunk} attempt {attempt}",
    )


def _enqueue_chunk(r: redis.Redis, h: Mapping[bytes, bytes], job_id: str, chunk: int, attempt: int):
    from rq import Queue

    queue = Queue(_s(h.get(b"queue")), connection=r)
    timeout = float(_s(h.get(b"timeout")) or 600)
    queue.enqueue_many([_chunk_data(job_id, chunk, attempt, timeout, int(_s(h.get(b"ttl")) or 0))])


def _error_body(message: str, code: str = "job_failed", param: str | None = None) -> dict:
    return {"error": {"message": message, "type": "server_error", "param": param, "code": code}}


def transition(
    r: redis.Redis,
    job_id: str,
    to: str,
    *,
    allowed_from: frozenset[str] | set[str] = ACTIVE,
    fields: Mapping[str, Any] | None = None,
) -> bool:
    """Compare-and-set the job status. Terminal states stamp the expiry and wake waiters."""
    key = job_key(job_id)
    with r.pipeline() as pipe:
        while True:
            try:
                pipe.watch(key)
                cur = _s(pipe.hget(key, "status"))
                if cur not in allowed_from:
                    pipe.unwatch()
                    return False
                ttl = int(_s(pipe.hget(key, "ttl")) or 0)
                now = time.time()
                pipe.multi()
                pipe.hset(key, mapping={"status": to, **(fields or {})})
                if to == "running":
                    pipe.hset(key, "started_at", repr(now))
                if to in TERMINAL:
                    pipe.hset(key, "finished_at", repr(now))
                    pipe.srem(ACTIVE_KEY, job_id)
                    pipe.zadd(EXPIRY_KEY, {job_id: now + ttl})
                    pipe.delete(job_key(job_id, "in"), job_key(job_id, "beats"))
                    if to != "succeeded":
                        pipe.delete(job_key(job_id, "out"))
                    pipe.publish(job_key(job_id, "done"), to)
                pipe.execute()
                return True
            except redis.WatchError:
                continue


def fail_job(r: redis.Redis, job_id: str, error_body: Mapping[str, Any]) -> bool:
    ok = transition(r, job_id, "failed", fields={"error": orjson.dumps(error_body)})
    if ok:
        _cancel_rq_chunks(r, job_id)
    return ok


def cancel_job(r: redis.Redis, job_id: str) -> bool:
    ok = transition(r, job_id, "cancelled")
    if ok:
        _cancel_rq_chunks(r, job_id)
    return ok


def _cancel_rq_chunks(r: redis.Redis, job_id: str) -> None:
    """Drop not-yet-started chunks from the queue (running ones see the status and stop)."""
    from rq.job import Job

    for k, raw in r.hgetall(job_key(job_id, "chunks")).items():
        st = orjson.loads(raw)
        if st.get("s") != "queued":
            continue
        with contextlib.suppress(Exception):
            Job.fetch(rq_job_id(job_id, int(k), st["a"]), connection=r).cancel()


def delete_job(r: redis.Redis, job_id: str) -> bool:
    """Cancel if still active, then delete every key of the job."""
    if not r.exists(job_key(job_id)):
        return False
    cancel_job(r, job_id)
    _delete_keys(r, job_id)
    return True


def _delete_keys(r: redis.Redis, job_id: str) -> None:
    pipe = r.pipeline(transaction=True)
    pipe.delete(*(job_key(job_id, p) for p in ("", "in", "out", "chunks", "beats")))
    pipe.srem(ACTIVE_KEY, job_id)
    pipe.zrem(EXPIRY_KEY, job_id)
    pipe.execute()


@dataclass
class ChunkTask:
    job_id: str
    chunk: int
    attempt: int
    offset: int
    items_blob: bytes
    meta: dict
    timeout: float
    lease: float
    fingerprint: str = ""


def _chunk_transaction(
    r: redis.Redis,
    job_id: str,
    chunk: int,
    accept: Callable[[dict], bool],
    write: Callable[[Any, Mapping[bytes, bytes], dict], None],
) -> tuple[Mapping[bytes, bytes], Any] | None:
    """An optimistic transaction on an active job and one of its chunks: ``accept(chunk_state)``
    decides whether to go on; ``write(pipe, job_hash, chunk_state)`` queues the writes. Returns
    the job hash and the last command's result, or None when the job or chunk is not (or no
    longer) to be touched."""
    key, ckey = job_key(job_id), job_key(job_id, "chunks")
    with r.pipeline() as pipe:
        while True:
            try:
                pipe.watch(key, ckey)
                h = pipe.hgetall(key)
                raw = pipe.hget(ckey, str(chunk))
                if _s(h.get(b"status")) not in ACTIVE or raw is None:
                    pipe.unwatch()
                    return None
                st = orjson.loads(raw)
                if not accept(st):
                    pipe.unwatch()
                    return None
                pipe.multi()
                write(pipe, h, st)
                return h, pipe.execute()[-1]
            except redis.WatchError:
                continue


def start_chunk(r: redis.Redis, job_id: str, chunk: int, attempt: int, worker: str):
    """Claim a chunk for this attempt. ``None`` when there is nothing to do (job gone, finished
    or cancelled, chunk done, or this attempt superseded by a retry)."""
    key, ckey = job_key(job_id), job_key(job_id, "chunks")

    def write(pipe: Any, h: Mapping[bytes, bytes], st: dict) -> None:
        now = time.time()
        pipe.hset(ckey, str(chunk), orjson.dumps({"a": attempt, "s": "running", "w": worker}))
        pipe.hset(job_key(job_id, "beats"), str(chunk), repr(now))
        pipe.hset(key, "last_progress", repr(now))
        if _s(h.get(b"status")) == "queued":
            pipe.hset(key, mapping={"status": "running", "started_at": repr(now)})
        pipe.hget(job_key(job_id, "in"), str(chunk))

    done = _chunk_transaction(
        r, job_id, chunk, lambda st: st.get("a") == attempt and st.get("s") != "done", write
    )
    if done is None or done[1] is None:
        return None
    h, blob = done
    meta = _s(h.get(b"meta"))
    return ChunkTask(
        job_id=job_id,
        chunk=chunk,
        attempt=attempt,
        offset=chunk * int(_s(h.get(b"chunk_size")) or 1),
        items_blob=blob,
        meta=orjson.loads(meta) if meta else {},
        timeout=float(_s(h.get(b"timeout")) or 600),
        lease=float(_s(h.get(b"lease")) or DEFAULT_LEASE),
        fingerprint=_s(h.get(b"fingerprint")),
    )


def beat_chunk(r: redis.Redis, job_id: str, chunk: int) -> None:
    r.hset(job_key(job_id, "beats"), str(chunk), repr(time.time()))


def job_active(r: redis.Redis, job_id: str) -> bool:
    return _s(r.hget(job_key(job_id), "status")) in ACTIVE


def finish_chunk(
    r: redis.Redis, job_id: str, chunk: int, offset: int, outs: Sequence[bytes]
) -> bool:
    """Store a chunk's encoded embeddings and count its progress once (a superseded attempt
    finishing late is harmless: the first finisher wins). True when it finished the job."""
    key, ckey = job_key(job_id), job_key(job_id, "chunks")

    def write(pipe: Any, h: Mapping[bytes, bytes], st: dict) -> None:
        if outs:
            pipe.hset(
                job_key(job_id, "out"), mapping={str(offset + i): b for i, b in enumerate(outs)}
            )
        pipe.hset(ckey, str(chunk), orjson.dumps({"a": st.get("a", 1), "s": "done"}))
        pipe.hdel(job_key(job_id, "in"), str(chunk))
        pipe.hdel(job_key(job_id, "beats"), str(chunk))
        pipe.hset(key, "last_progress", repr(time.time()))
        pipe.hincrby(key, "completed", len(outs))
        pipe.hincrby(key, "chunks_done", 1)

    done = _chunk_transaction(r, job_id, chunk, lambda st: st.get("s") != "done", write)
    if done is None:
        return False
    h, chunks_done = done
    if chunks_done >= int(_s(h.get(b"n_chunks")) or 0):
        return transition(r, job_id, "succeeded")
    return False


# ---- worker presence, watchdog and sweeping ------------------------------------------------
def worker_beat(r: redis.Redis, name: str, queue: str, model: str) -> None:
    r.hset(WORKERS_KEY, name, orjson.dumps({"beat": time.time(), "queue": queue, "model": model}))


def worker_gone(r: redis.Redis, name: str) -> None:
    r.hdel(WORKERS_KEY, name)


def live_workers(
    r: redis.Redis,
    queue: str | None = None,
    now: float | None = None,
    dead_after: float = WORKER_DEAD_AFTER,
) -> list[str]:
    now = time.time() if now is None else now
    out = []
    for name, raw in r.hgetall(WORKERS_KEY).items():
        info = orjson.loads(raw)
        if now - info.get("beat", 0) > 3600:
            r.hdel(WORKERS_KEY, name)
        elif now - info.get("beat", 0) <= dead_after and (
            queue is None or info.get("queue") == queue
        ):
            out.append(_s(name))
    return out


def watchdog(r: redis.Redis, *, orphan_timeout: float = 300.0, now: float | None = None) -> None:
    """Heal active jobs: re-enqueue chunks whose worker stopped beating (bounded), fail jobs no
    worker serves, and finish jobs whose last chunk finished but never flipped the status."""
    now = time.time() if now is None else now
    workers_by_queue: dict[tuple[str, float], int] = {}
    for raw_id in r.smembers(ACTIVE_KEY):
        job_id = _s(raw_id)
        h = r.hgetall(job_key(job_id))
        status = _s(h.get(b"status"))
        if status not in ACTIVE:
            r.srem(ACTIVE_KEY, job_id)
            continue
        n_chunks = int(_s(h.get(b"n_chunks")) or 0)
        if int(_s(h.get(b"chunks_done")) or 0) >= n_chunks:
            transition(r, job_id, "succeeded")
            continue
        lease = float(_s(h.get(b"lease")) or DEFAULT_LEASE)
        last_progress = float(_s(h.get(b"last_progress")) or 0)
        beats = {int(k): float(v) for k, v in r.hgetall(job_key(job_id, "beats")).items()}
        for k_raw, raw in r.hgetall(job_key(job_id, "chunks")).items():
            k, st = int(k_raw), orjson.loads(raw)
            if st.get("s") == "running" and now - beats.get(k, 0.0) > lease:
                _recover_chunk(r, h, job_id, k, st, now - beats.get(k, 0.0))
            elif st.get("s") == "queued" and now - last_progress > lease:
                _ensure_enqueued(r, h, job_id, k, st["a"])
        queue = _s(h.get(b"queue"))
        if (queue, lease) not in workers_by_queue:
            workers_by_queue[queue, lease] = len(live_workers(r, queue, now, dead_after=lease))
        if not workers_by_queue[queue, lease] and now - last_progress > orphan_timeout:
            fail_job(
                r,
                job_id,
                _error_body(
                    f"no progress for {now - last_progress:.0f} s and no mlx-embeddings-worker "
                    f"serves queue {queue!r}; start one (or a server with its local worker)",
                    code="job_failed",
                ),
            )


def _recover_chunk(
    r: redis.Redis, h: Mapping[bytes, bytes], job_id: str, k: int, st: dict, silent_for: float
) -> None:
    ckey = job_key(job_id, "chunks")
    attempt = int(st.get("a", 1))
    with r.pipeline() as pipe:
        try:
            pipe.watch(ckey)
            if orjson.loads(pipe.hget(ckey, str(k)) or b"{}") != st:
                pipe.unwatch()
                return
            if attempt >= MAX_CHUNK_ATTEMPTS:
                pipe.unwatch()
                size = int(_s(h.get(b"chunk_size")) or 1)
                total = int(_s(h.get(b"total")) or 0)
                first, last = k * size, min(total, (k + 1) * size) - 1
                log.warning("job %s chunk %d: worker lost %d times; failing", job_id, k, attempt)
                fail_job(
                    r,
                    job_id,
                    _error_body(
                        f"the worker computing items {first}..{last} stopped responding "
                        f"({attempt} attempts, last worker {st.get('w', '?')!r} silent for "
                        f"{silent_for:.0f} s); the job was given up",
                    ),
                )
                return
            pipe.multi()
            pipe.hset(ckey, str(k), orjson.dumps({"a": attempt + 1, "s": "queued"}))
            pipe.execute()
        except redis.WatchError:
            return
    log.warning(
        "job %s chunk %d: worker %r silent for %.0f s; retrying (attempt %d of %d)",
        job_id, k, st.get("w"), silent_for, attempt + 1, MAX_CHUNK_ATTEMPTS,
    )  # fmt: skip
    _enqueue_chunk(r, h, job_id, k, attempt + 1)


def _ensure_enqueued(r: redis.Redis, h: Mapping[bytes, bytes], job_id: str, k: int, attempt: int):
    """A queued chunk whose RQ job vanished (e.g. lost in a Redis crash) is enqueued again."""
    from rq.job import Job

    if not Job.exists(rq_job_id(job_id, k, attempt), connection=r):
        log.warning("job %s chunk %d: its RQ job is missing; enqueueing it again", job_id, k)
        _enqueue_chunk(r, h, job_id, k, attempt)


def sweep(r: redis.Redis, now: float | None = None) -> int:
    """Delete the keys of jobs whose time is up. Returns how many were deleted."""
    now = time.time() if now is None else now
    ids = [_s(x) for x in r.zrangebyscore(EXPIRY_KEY, 0, now)]
    for job_id in ids:
        if job_active(r, job_id):
            cancel_job(r, job_id)
        _delete_keys(r, job_id)
    return len(ids)


def maintain(r: redis.Redis, *, orphan_timeout: float = 300.0, interval: float = 2.0) -> bool:
    """Watchdog + sweep, at most once per ``interval`` across all processes."""
    if not r.set(WATCHDOG_LOCK, b"1", nx=True, px=max(1, int(interval * 1000))):
        return False
    sweep(r)
    watchdog(r, orphan_timeout=orphan_timeout)
    return True


# ---- the store the HTTP layer uses ---------------------------------------------------------
@contextlib.contextmanager
def _queue_errors() -> Iterator[None]:
    try:
        yield
    except _REDIS_DOWN as exc:
        raise QueueUnavailable(
            f"the job queue (Redis) is unreachable ({type(exc).__name__}); retry later",
            headers={"Retry-After": "5"},
        ) from exc
    except redis.exceptions.ResponseError as exc:
        if "OOM" in str(exc) or "LOADING" in str(exc):
            raise QueueUnavailable(
                f"the job queue (Redis) cannot take jobs now: {exc}", headers={"Retry-After": "5"}
            ) from exc
        raise


class JobStore:
    """Async facade over the job state. Reads use ``redis.asyncio``; writes (which go through
    RQ, a synchronous library) run in a thread. Call ``start()`` inside the server's loop to
    run the watchdog/sweeper timer, and ``close()`` on shutdown."""

    def __init__(
        self,
        handle: Any,
        settings: Settings,
        fingerprint: str,
        *,
        lease: float = DEFAULT_LEASE,
        orphan_timeout: float = 300.0,
        maintenance_interval: float = 2.0,
        poll_interval: float = 0.5,
    ) -> None:
        self.handle = handle
        self.settings = settings
        self.fingerprint = fingerprint
        self.lease = lease
        self.orphan_timeout = orphan_timeout
        self.maintenance_interval = maintenance_interval
        self.poll_interval = poll_interval
        self._sync: redis.Redis | None = None
        self._async: redis.asyncio.Redis | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None
        self._last_maintenance = 0.0
        self.down_logged = False

    # -- clients --
    @property
    def sync(self) -> redis.Redis:
        if self._sync is None:
            self._sync = self.handle.sync_client(socket_timeout=10.0)
        return self._sync

    def _aredis(self) -> redis.asyncio.Redis:
        loop = asyncio.get_running_loop()
        if self._async is None or self._loop is not loop:
            self._async = self.handle.async_client(socket_timeout=10.0)
            self._loop = loop
        return self._async

    # -- lifecycle --
    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._maintenance_loop(), name="jobs-maintenance")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        if self._async is not None:
            with contextlib.suppress(Exception):
                await self._async.aclose()
            self._async = None
        if self._sync is not None:
            self._sync.close()
            self._sync = None

    async def _maintenance_loop(self) -> None:
        failing = False
        while True:
            try:
                await self.maintain()
                failing = False
            except Exception as exc:
                if not failing:
                    log.warning("job maintenance failed (%s); will retry", exc)
                failing = True
            await asyncio.sleep(self.maintenance_interval)

    async def maintain(self) -> None:
        self._last_maintenance = time.monotonic()
        await asyncio.to_thread(
            maintain, self.sync, orphan_timeout=self.orphan_timeout,
            interval=self.maintenance_interval,
        )  # fmt: skip

    # -- API --
    async def submit(
        self,
        items: Sequence[JobItem],
        request_meta: Mapping[str, Any] | None = None,
        *,
        truncate: bool = False,
    ) -> JobStatus:
        with _queue_errors():
            job_id = await asyncio.to_thread(
                create_job,
                self.sync,
                items,
                settings=self.settings,
                fingerprint=self.fingerprint,
                request_meta=request_meta or {},
                lease=self.lease,
                truncate=truncate,
            )
            return await self.status(job_id)

    async def status(self, job_id: str) -> JobStatus:
        with _queue_errors():
            h = await self._aredis().hgetall(job_key(job_id)) if _valid_id(job_id) else {}
        if not h:
            raise JobNotFound(f"no job {job_id!r} (unknown, deleted or expired)", "job_id")
        return JobStatus.from_hash(job_id, h)

    async def result(self, job_id: str, status: JobStatus | None = None) -> list[Embedding]:
        """The embeddings of a finished job (``status``: one just read, to save a round trip)."""
        st = status if status is not None else await self.status(job_id)
        if st.status in ACTIVE:
            raise JobNotFinished(
                f"job {job_id} is {st.status} ({st.completed}/{st.total} items done)", "job_id"
            )
        if st.status != "succeeded":
            raise _failure(st)
        with _queue_errors():
            blobs = await self._aredis().hgetall(job_key(job_id, "out"))
        if len(blobs) != st.total:
            raise JobNotFound(f"the results of job {job_id} are gone", "job_id")
        return [decode_embedding(blobs[str(i).encode()]) for i in range(st.total)]

    async def cancel(self, job_id: str) -> JobStatus:
        await self.status(job_id)
        with _queue_errors():
            await asyncio.to_thread(cancel_job, self.sync, job_id)
        return await self.status(job_id)

    async def delete(self, job_id: str) -> None:
        with _queue_errors():
            found = _valid_id(job_id) and await asyncio.to_thread(delete_job, self.sync, job_id)
        if not found:
            raise JobNotFound(f"no job {job_id!r} (unknown, deleted or expired)", "job_id")

    async def wait(self, job_id: str, timeout: float | None = None) -> list[Embedding]:
        """Await the job's end without blocking the loop (pubsub + a slow poll that also runs
        the watchdog). Raises JobTimeout after ``timeout`` (default ``--job-timeout``)."""
        timeout = self.settings.job_timeout if timeout is None else timeout
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        with _queue_errors():
            pubsub = self._aredis().pubsub()
            await pubsub.subscribe(job_key(job_id, "done"))
        try:
            while True:
                st = await self.status(job_id)
                if st.finished:
                    return await self.result(job_id)
                left = deadline - loop.time()
                if left <= 0:
                    raise JobTimeout(
                        f"job {job_id} did not finish within {timeout:g} s "
                        f"({st.completed}/{st.total} items done); it keeps running — "
                        "poll the job for its result",
                        "job_id",
                    )
                with _queue_errors():
                    await pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=min(left, self.poll_interval)
                    )
                if time.monotonic() - self._last_maintenance > self.maintenance_interval:
                    with contextlib.suppress(Exception):
                        await self.maintain()
        finally:
            with contextlib.suppress(Exception):
                await pubsub.unsubscribe()
                await pubsub.aclose()


def _valid_id(job_id: str) -> bool:
    return job_id.startswith(JOB_ID_PREFIX) and len(job_id) < 100


def _failure(st: JobStatus) -> JobFailed:
    """JobFailed carrying the stored error; ``.cause`` is that error rebuilt as its own class
    (e.g. a 400 for a bad item), for the synchronous path to re-raise."""
    if st.status == "cancelled":
        exc = JobFailed(f"job {st.id} was cancelled", "job_id")
        exc.cause = exc  # type: ignore[attr-defined]
        return exc
    body = st.error or _error_body("the job failed")
    err = body.get("error", {})
    exc = JobFailed(f"job {st.id} failed: {err.get('message', '')}", err.get("param"))
    exc.cause = rebuild_error(body)  # type: ignore[attr-defined]
    return exc
