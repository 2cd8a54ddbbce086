"""The job record and its state, kept in Redis beside RQ's own keys.

A job is the whole request; its chunks are RQ jobs in an RQ ``Group`` named after it
(:mod:`app.jobs.chunks`). What RQ does not keep lives here, without a TTL so that the
``volatile-lru`` eviction of the cache never touches it (:func:`sweep` deletes it
``--job-ttl`` after the end)::

    mlxemb:job:{id}        hash   status, model, queue, owner, created_at, started_at,
                                  finished_at, progress_at, total, error (JSON), meta (JSON)
    mlxemb:job:{id}:out    hash   item index -> encoded embedding; its length is the progress
    mlxemb:job:{id}:done   pubsub channel, published on every terminal transition
    mlxemb:jobs:expiry     zset   id -> unix time its keys are deleted
    mlxemb:stats           hash   chunk_retries (for GET /metrics)
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis

from app.cache import KEY_PREFIX

JOB_ID_PREFIX = "embjob_"
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
ACTIVE = frozenset({"queued", "running"})
EXPIRY_KEY = KEY_PREFIX + "jobs:expiry"
STATS_KEY = KEY_PREFIX + "stats"  # hash of counters the server and the workers share


def job_key(job_id: str, part: str = "") -> str:
    return f"{KEY_PREFIX}job:{job_id}" + (f":{part}" if part else "")


def valid_id(job_id: str) -> bool:
    return job_id.startswith(JOB_ID_PREFIX) and len(job_id) < 100


def _s(v: bytes | str | None) -> str:
    return v.decode() if isinstance(v, bytes) else (v or "")


@dataclass
class JobStatus:
    id: str
    status: str
    model: str
    queue: str
    created_at: int
    progress_at: float
    completed: int
    total: int
    expires_at: float | None = None  # once finished
    error: dict | None = None
    meta: dict = field(default_factory=dict)
    owner: str = ""  # app.auth.Principal.owner of the key that submitted it ("" without keys)

    @classmethod
    def from_hash(cls, job_id: str, h: Mapping[bytes, bytes], completed: int) -> JobStatus:
        error, meta = _s(h.get(b"error")), _s(h.get(b"meta"))
        finished = _s(h.get(b"finished_at"))
        return cls(
            id=job_id,
            status=_s(h.get(b"status")),
            model=_s(h.get(b"model")),
            queue=_s(h.get(b"queue")),
            created_at=int(float(_s(h.get(b"created_at")) or 0)),
            progress_at=float(_s(h.get(b"progress_at")) or 0),
            completed=completed,
            total=int(_s(h.get(b"total")) or 0),
            expires_at=float(finished) + int(_s(h.get(b"ttl")) or 0) if finished else None,
            error=orjson.loads(error) if error else None,
            meta=orjson.loads(meta) if meta else {},
            owner=_s(h.get(b"owner")),
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


def create(
    r: redis.Redis,
    job_id: str,
    *,
    total: int,
    model: str,
    queue: str,
    ttl: int,
    meta: Mapping,
    owner: str = "",
) -> None:
    now = repr(time.time())
    pipe = r.pipeline(transaction=True)
    pipe.hset(
        job_key(job_id),
        mapping={
            "status": "queued", "model": model, "queue": queue, "owner": owner, "created_at": now,
            "progress_at": now, "total": total, "ttl": ttl, "error": "",
            "meta": orjson.dumps(dict(meta), default=str),
        },
    )  # fmt: skip
    pipe.zadd(EXPIRY_KEY, {job_id: time.time() + ttl})
    pipe.execute()


def transition(
    r: redis.Redis, job_id: str, to: str, fields: Mapping[str, Any] | None = None
) -> bool:
    """Compare-and-set an active job's status. Terminal states stamp the expiry and wake
    waiters; only a success keeps the output."""
    key = job_key(job_id)
    with r.pipeline() as pipe:
        while True:
            try:
                pipe.watch(key)
                if _s(pipe.hget(key, "status")) not in ACTIVE:
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
                    pipe.zadd(EXPIRY_KEY, {job_id: now + ttl})
                    if to != "succeeded":
                        pipe.delete(job_key(job_id, "out"))
                    pipe.publish(job_key(job_id, "done"), to)
                pipe.execute()
                return True
            except redis.WatchError:
                continue


def fail(r: redis.Redis, job_id: str, record: Mapping[str, Any]) -> bool:
    return transition(r, job_id, "failed", {"error": orjson.dumps(dict(record))})


def begin_chunk(r: redis.Redis, job_id: str) -> bool:
    """A worker starts a chunk: False when the job is no longer active (cancelled, failed)."""
    status = _s(r.hget(job_key(job_id), "status"))
    if status == "queued":
        transition(r, job_id, "running")
    elif status != "running":
        return False
    r.hset(job_key(job_id), "progress_at", repr(time.time()))
    return True


def finish_chunk(r: redis.Redis, job_id: str, offset: int, outs: Sequence[bytes]) -> bool:
    """Store a chunk's encoded embeddings (idempotent: a chunk run twice writes the same
    indices). True when this finished the job."""
    key, out = job_key(job_id), job_key(job_id, "out")
    pipe = r.pipeline(transaction=True)
    pipe.hget(key, "status")
    pipe.hset(out, mapping={str(offset + i): b for i, b in enumerate(outs)})
    pipe.hset(key, "progress_at", repr(time.time()))
    pipe.hlen(out)
    pipe.hget(key, "total")
    status, _, _, done, total = pipe.execute()
    if _s(status) not in ACTIVE:
        r.delete(out)  # cancelled or failed meanwhile: nothing of it is kept
        return False
    return done >= int(_s(total) or 0) and transition(r, job_id, "succeeded")


def delete(r: redis.Redis, job_id: str) -> None:
    r.delete(job_key(job_id), job_key(job_id, "out"))
    r.zrem(EXPIRY_KEY, job_id)


def sweep(r: redis.Redis, now: float | None = None, limit: int = 100) -> list[str]:
    """Delete the keys of jobs whose time is up (still-active ones are cancelled first)."""
    now = time.time() if now is None else now
    ids = [_s(x) for x in r.zrangebyscore(EXPIRY_KEY, 0, now, start=0, num=limit)]
    for job_id in ids:
        transition(r, job_id, "cancelled")
        delete(r, job_id)
    return ids
