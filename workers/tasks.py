"""The RQ job function of one chunk: ``workers.tasks.embed_chunk(job_id, chunk, attempt)``."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import redis
from rq import get_current_job

from app import jobs
from app.cache import SyncEmbeddingCache, encode_embedding
from app.dispatch import tie_to
from app.errors import ApiError, InternalError, ModelNotReady, Overloaded, error_record
from app.job_items import decode_items
from workers import runtime

log = logging.getLogger(__name__)


def embed_chunk(job_id: str, chunk: int, attempt: int) -> str:
    rq_job = get_current_job()
    if rq_job is None:
        raise RuntimeError("embed_chunk must run inside an RQ worker")
    r: redis.Redis = rq_job.connection
    engine = runtime.get_engine()
    settings = runtime.get_settings()
    worker = rq_job.worker_name or f"pid-{threading.get_native_id()}"
    task = jobs.start_chunk(r, job_id, chunk, attempt, worker)
    if task is None:
        return "skipped"
    with _beating(r, job_id, chunk, jobs.BEAT_INTERVAL):
        try:
            return _run(r, engine, settings, task)
        except ApiError as exc:
            jobs.fail_job(r, job_id, error_record(exc))
            return "failed"
        except Exception as exc:
            if not rq_job.retries_left:
                jobs.fail_job(
                    r,
                    job_id,
                    error_record(
                        InternalError(
                            f"a worker failed on items of this job: {type(exc).__name__}: {exc}"
                        )
                    ),
                )
            raise


def _run(r: redis.Redis, engine: Any, settings: Any, task: jobs.ChunkTask) -> str:
    mine = engine.info.fingerprint
    if task.fingerprint and task.fingerprint != mine:
        raise InternalError(
            f"worker model mismatch: this worker serves {settings.model_name!r} (fingerprint "
            f"{mine[:48]!r}) but the job was made for fingerprint {task.fingerprint[:48]!r}; run "
            "workers with the server's --model/--dtype/prompt flags, or give them another "
            "--queue-name"
        )
    items = decode_items(task.items_blob)
    truncate = bool(task.meta.get("truncate", False))
    cache = SyncEmbeddingCache(r, ttl=settings.cache_ttl) if settings.cache else None
    found: list = [None] * len(items)
    if cache is not None and task.meta.get("cache_read"):
        found = cache.get_many([it.cache_key for it in items])
    miss = [i for i, e in enumerate(found) if e is None]
    prepared = []
    for i in miss:
        item = items[i]
        try:
            prepared.append(engine.prepare(item.input, truncate=truncate))
        except ApiError as exc:
            index = item.index if item.index is not None else task.offset + i
            raise tie_to(exc, f"input[{index}]") from None
    if not jobs.job_active(r, task.job_id):
        return "cancelled"
    computed = _embed_patiently(engine, prepared, task.timeout) if prepared else []
    for i, emb in zip(miss, computed, strict=True):
        found[i] = emb
    outs = [encode_embedding(e) for e in found]
    if cache is not None:
        cache.set_many(
            {
                items[i].cache_key: e
                for i, e in zip(miss, computed, strict=True)
                if items[i].cache_key
            }
        )
    jobs.finish_chunk(r, task.job_id, task.chunk, task.offset, outs)
    return "done"


def _embed_patiently(engine: Any, prepared: list, timeout: float) -> list:
    """embed_blocking, waiting out a full engine queue or a still-loading model."""
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        left = deadline - time.monotonic()
        try:
            return engine.embed_blocking(prepared, timeout=max(0.1, left))
        except (Overloaded, ModelNotReady):
            if left <= delay:
                raise
            time.sleep(delay)
            delay = min(1.0, delay * 2)
        except TimeoutError:
            raise InternalError(f"the chunk did not finish within {timeout:g} s") from None


@contextlib.contextmanager
def _beating(r: redis.Redis, job_id: str, chunk: int, interval: float) -> Iterator[None]:
    """Refresh the chunk's heartbeat from a side thread while the chunk computes."""
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(interval):
            with contextlib.suppress(Exception):
                jobs.beat_chunk(r, job_id, chunk)

    thread = threading.Thread(target=run, name=f"beat-{job_id}-{chunk}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(1.0)
