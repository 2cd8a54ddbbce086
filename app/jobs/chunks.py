"""A job's chunks as RQ jobs: one RQ ``Group`` per job, one queue per model setup, one retry
policy (the chunk function itself is :func:`app.jobs.worker.embed_chunk`).

Faults are RQ's: an exception is retried (``Retry(max=CHUNK_RETRIES)``), and so is a chunk
whose worker died (its execution expires from the ``StartedJobRegistry`` after the worker's
lease, and RQ's registry cleanup retries it). When the retries are spent, :func:`chunk_failed`
(RQ's failure callback) fails the whole job with a clear error.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Sequence
from typing import Any

import redis
from rq import Callback, Queue, Retry
from rq.group import Group
from rq.job import Job, JobStatus

from app.errors import InternalError, error_record
from app.jobs import store
from app.jobs.items import JobItem

log = logging.getLogger(__name__)

CHUNK_RETRIES = 2  # three attempts in all
CHUNK_FUNC = "app.jobs.worker.embed_chunk"


def queue_name(base: str, fingerprint: str) -> str:
    """One queue per model setup: a worker only ever sees chunks for the model it holds."""
    return f"{base}:{hashlib.sha256(fingerprint.encode()).hexdigest()[:12]}"


def enqueue(
    r: redis.Redis,
    job_id: str,
    items: Sequence[JobItem],
    *,
    queue: str,
    chunk_size: int,
    timeout: float,
    options: dict[str, Any],
) -> None:
    size = max(1, chunk_size)
    q = Queue(queue, connection=r)
    datas = [
        Queue.prepare_data(
            CHUNK_FUNC,
            args=(job_id, start, list(items[start : start + size]), options),
            job_id=f"{job_id}-{start}",
            timeout=int(timeout),
            result_ttl=0,
            failure_ttl=3600,
            retry=Retry(max=CHUNK_RETRIES),
            on_failure=Callback(chunk_failed),
            description=f"embed {job_id} items {start}..{min(len(items), start + size) - 1}",
        )
        for start in range(0, len(items), size)
    ]
    Group.create(r, name=job_id).enqueue_many(q, datas)


def cancel_queued(r: redis.Redis, job_id: str) -> None:
    """Drop the job's chunks still waiting in the queue (a running one sees the job's status)."""
    for job in Group(r, name=job_id).get_jobs():
        if job.get_status() in (JobStatus.QUEUED, JobStatus.DEFERRED, JobStatus.SCHEDULED):
            job.cancel()


def chunk_failed(job: Job, connection: redis.Redis, exc_type: Any, exc: Any, tb: Any) -> None:
    """RQ's failure callback, run on every failed attempt (an abandoned one too)."""
    job_id, start, items = job.args[0], job.args[1], job.args[2]
    what = f"items {start}..{start + len(items) - 1}"
    reason = f"{exc_type.__name__}: {exc}" if exc_type is not None else "unknown error"
    if "Abandoned" in reason:
        reason = "its worker stopped responding"
    attempt = 1 + CHUNK_RETRIES - (job.retries_left or 0)
    if job.retries_left:
        with contextlib.suppress(Exception):
            connection.hincrby(store.STATS_KEY, "chunk_retries", 1)
        log.warning("job %s %s: attempt %d failed (%s); retrying", job_id, what, attempt, reason)
        return
    store.fail(
        connection,
        job_id,
        error_record(InternalError(f"the job failed on {what} after {attempt} attempts: {reason}")),
    )
