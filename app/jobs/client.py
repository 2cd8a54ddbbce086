"""What the server does with jobs: submit a request's items, read status and results, wait,
cancel, delete. A job belongs to the ``owner`` that submitted it: the reads and the cancel of
another owner get the same JobNotFound as an unknown id (``owner=None``: no check, for the
server's own synchronous jobs). Reads use ``redis.asyncio``; writes that go through RQ (a
synchronous library) run in a thread.

Request-level assembly stays here: ordered output, progress, a pubsub wait, and the one check
RQ cannot make: a job whose chunks no live worker serves fails after ``--orphan-timeout`` with
a message naming what is wrong (no worker at all, or workers for other model settings).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Iterator, Sequence
from typing import Any

import redis
import redis.asyncio

from app.cache import REDIS_DOWN, decode_embedding
from app.engine.base import Embedding
from app.errors import (
    JobCancelled,
    JobFailed,
    JobNotFinished,
    JobNotFound,
    JobTimeout,
    QueueUnavailable,
    error_record,
    rebuild_error,
)
from app.jobs import chunks, store
from app.jobs.items import JobItem
from app.jobs.store import ACTIVE, JobStatus, job_key
from app.jobs.worker import live_workers
from app.settings import Settings

log = logging.getLogger(__name__)


@contextlib.contextmanager
def queue_errors() -> Iterator[None]:
    try:
        yield
    except REDIS_DOWN as exc:
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


class JobClient:
    def __init__(self, handle: Any, settings: Settings, fingerprint: str) -> None:
        self.handle = handle
        self.settings = settings
        self.queue = chunks.queue_name(settings.queue_name, fingerprint)
        self.sync = handle.sync_client(socket_timeout=10.0)
        self._async: redis.asyncio.Redis | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _aredis(self) -> redis.asyncio.Redis:
        loop = asyncio.get_running_loop()
        if self._async is None or self._loop is not loop:
            self._async = self.handle.async_client(socket_timeout=10.0)
            self._loop = loop
        return self._async

    async def close(self) -> None:
        if self._async is not None:
            with contextlib.suppress(Exception):
                await self._async.aclose()
        self.sync.close()

    # ---- workers ---------------------------------------------------------------------------
    def workers(self) -> int:
        return len(live_workers(self.sync, self.queue, self.settings.job_lease))

    async def has_workers(self) -> bool:
        with queue_errors():
            return await asyncio.to_thread(self.workers) > 0

    # ---- API -------------------------------------------------------------------------------
    async def submit(
        self,
        items: Sequence[JobItem],
        meta: dict[str, Any],
        *,
        owner: str = "",
        chunk_size: int | None = None,
    ) -> JobStatus:
        """``chunk_size``: items per RQ chunk (default ``--job-chunk-size``)."""
        job_id = store.JOB_ID_PREFIX + secrets.token_urlsafe(24)
        s = self.settings
        size = chunk_size or s.job_chunk_size
        options = {"truncate": bool(meta.get("truncate")), "cache_read": meta.get("cache_read")}

        def write() -> None:
            store.sweep(self.sync)
            store.create(self.sync, job_id, total=len(items), model=s.model_name,
                         queue=self.queue, ttl=s.job_ttl, meta=meta, owner=owner)  # fmt: skip
            try:
                chunks.enqueue(self.sync, job_id, items, queue=self.queue,
                               chunk_size=size, timeout=s.job_timeout,
                               options=options)  # fmt: skip
            except Exception as exc:
                store.fail(self.sync, job_id, error_record(JobFailed(f"could not enqueue: {exc}")))
                raise

        with queue_errors():
            await asyncio.to_thread(write)
        return await self.status(job_id)

    async def status(self, job_id: str, owner: str | None = None) -> JobStatus:
        with queue_errors():
            st = await self._read(job_id)
        if st is not None and owner is not None and st.owner != owner:
            st = None  # another key's job: not confirmed to exist
        if st is not None and st.expires_at is not None and st.expires_at < time.time():
            with queue_errors():
                await asyncio.to_thread(store.delete, self.sync, job_id)
            st = None
        if st is None:
            raise JobNotFound(f"no job {job_id!r} (unknown, deleted or expired)", "job_id")
        if st.status in ACTIVE and time.time() - st.progress_at > self.settings.orphan_timeout:
            with queue_errors():
                if await asyncio.to_thread(self._fail_if_orphaned, st):
                    return await self.status(job_id, owner)
        return st

    async def _read(self, job_id: str) -> JobStatus | None:
        if not store.valid_id(job_id):
            return None
        pipe = self._aredis().pipeline(transaction=False)
        pipe.hgetall(job_key(job_id))
        pipe.hlen(job_key(job_id, "out"))
        h, completed = await pipe.execute()
        return JobStatus.from_hash(job_id, h, completed) if h else None

    def _fail_if_orphaned(self, st: JobStatus) -> bool:
        r, lease = self.sync, self.settings.job_lease
        if live_workers(r, st.queue, lease):
            return False
        base = self.settings.queue_name
        others = [w for w in live_workers(r, None, lease)
                  if any(q.startswith(base + ":") for q in w.queue_names())]  # fmt: skip
        msg = (
            f"no live mlx-embeddings-worker serves this model (queue {st.queue!r}) and the job "
            f"made no progress for {time.time() - st.progress_at:.0f} s (--orphan-timeout)"
        )
        if others:
            names = ", ".join(f"{w.name} ({','.join(w.queue_names())})" for w in others[:5])
            msg += (
                f"; {len(others)} worker(s) serve other model settings: {names}. Start workers "
                "with the server's --model, --dtype and prompt flags"
            )
        else:
            msg += "; start one (or a server with its local worker)"
        log.warning("job %s: %s", st.id, msg)
        return store.fail(r, st.id, error_record(JobFailed(msg)))

    async def result(
        self, job_id: str, status: JobStatus | None = None, *, owner: str | None = None
    ) -> list[Embedding]:
        st = status if status is not None else await self.status(job_id, owner)
        if st.status in ACTIVE:
            raise JobNotFinished(
                f"job {job_id} is {st.status} ({st.completed}/{st.total} items done)", "job_id"
            )
        if st.status == "cancelled":
            raise JobCancelled(f"job {job_id} was cancelled; it has no result", "job_id")
        if st.status != "succeeded":
            cause = st.error or JobFailed("the job failed").body()
            raise JobFailed(f"job {job_id} failed: {cause['error'].get('message', '')}", "job_id")
        with queue_errors():
            blobs = await self._aredis().hgetall(job_key(job_id, "out"))
        if len(blobs) != st.total:
            raise JobNotFound(f"the results of job {job_id} are gone", "job_id")
        return [decode_embedding(blobs[str(i).encode()]) for i in range(st.total)]

    async def cancel(self, job_id: str, owner: str | None = None) -> JobStatus:
        await self.status(job_id, owner)

        def cancel() -> None:
            if store.transition(self.sync, job_id, "cancelled"):
                chunks.cancel_queued(self.sync, job_id)

        with queue_errors():
            await asyncio.to_thread(cancel)
        return await self.status(job_id)

    async def delete(self, job_id: str, owner: str | None = None) -> None:
        await self.cancel(job_id, owner)
        with queue_errors():
            await asyncio.to_thread(store.delete, self.sync, job_id)

    async def drop_result(self, job_id: str) -> None:
        """Delete a read job's vectors (the Batch API's windows: their output file holds them
        now); its record stays until ``--job-ttl``."""
        with queue_errors():
            await self._aredis().delete(job_key(job_id, "out"))

    async def wait(self, job_id: str, timeout: float | None = None) -> list[Embedding]:
        """Await the job's end without blocking the loop (pubsub, and a poll that also makes
        the orphan check). A failed job raises its own error (e.g. the 400 of a bad item)."""
        timeout = self.settings.job_timeout if timeout is None else timeout
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        with queue_errors():
            pubsub = self._aredis().pubsub()
            await pubsub.subscribe(job_key(job_id, "done"))
        try:
            while True:
                st = await self.status(job_id)
                if st.status == "failed":
                    raise rebuild_error(st.error or error_record(JobFailed("the job failed")))
                if st.finished:
                    return await self.result(job_id, st)
                left = deadline - loop.time()
                if left <= 0:
                    raise JobTimeout(
                        f"job {job_id} did not finish within {timeout:g} s "
                        f"({st.completed}/{st.total} items done); it keeps running: poll the "
                        "job for its result",
                        "job_id",
                    )
                with queue_errors():
                    await pubsub.get_message(ignore_subscribe_messages=True,
                                             timeout=min(left, 0.5))  # fmt: skip
        finally:
            with contextlib.suppress(Exception):
                await pubsub.unsubscribe()
                await pubsub.aclose()
