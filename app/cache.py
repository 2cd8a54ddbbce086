"""The embedding cache: the one key scheme, the value codec, and per-item lookups in Redis.

Key: ``mlxemb:c:<sha256>`` over (model fingerprint, modality, prompt role, the options that
change the vector, the exact content: text, token ids, or the decoded image's content hash —
never a URL). Value: a compact header (dtype, shape, n_tokens, extras as JSON) and the raw
vector bytes, so a cached vector is bit-identical to the computed one.

Every entry has a TTL (``--cache-ttl``; 0 means ten years): the embedded Redis evicts with
``volatile-lru``, which only touches keys with a TTL, so cache entries are evictable and job
data (no TTL) never is.

``Cache-Control`` follows HTTP: ``no-cache`` = do not use a stored vector, compute a fresh one
and store it; ``no-store`` = neither read nor write. ``--no-cache`` turns the cache off.

When Redis is unreachable the cache is skipped (one warning, one info when it is back) and
the connection is retried every ``retry_interval`` seconds; requests never fail because of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import struct
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import redis
import redis.asyncio

from app.engine.base import Embedding, EngineInput, ImageInput, TextInput, TokenInput

log = logging.getLogger(__name__)

KEY_PREFIX = "mlxemb:"
CACHE_PREFIX = KEY_PREFIX + "c:"
STATS_HITS = KEY_PREFIX + "stats:cache:hits"
STATS_MISSES = KEY_PREFIX + "stats:cache:misses"
KEY_VERSION = b"mlxemb-cache-v1"
NO_EXPIRY_TTL = 10 * 365 * 24 * 3600  # "no expiry" still needs a TTL to stay evictable

REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


# ---- keys ----------------------------------------------------------------------------------
def modality(item: EngineInput) -> str:
    if isinstance(item, TextInput):
        return "text"
    if isinstance(item, TokenInput):
        return "tokens"
    if isinstance(item, ImageInput):
        return "image"
    raise TypeError(f"not an engine input: {type(item).__name__}")


def image_content_hash(item: ImageInput) -> str:
    """``content_hash`` set by the input resolver, else a sha256 of the decoded pixels."""
    if item.content_hash:
        return item.content_hash
    img = item.image
    h = hashlib.sha256(f"{img.mode}:{img.size[0]}x{img.size[1]}:".encode())
    h.update(img.tobytes())
    return h.hexdigest()


def content_bytes(item: EngineInput) -> bytes:
    if isinstance(item, TextInput):
        return item.text.encode("utf-8", "surrogatepass")
    if isinstance(item, TokenInput):
        return np.asarray(item.ids, dtype="<i8").tobytes()
    if isinstance(item, ImageInput):
        return image_content_hash(item).encode()
    raise TypeError(f"not an engine input: {type(item).__name__}")


def canonical_options(options: Mapping[str, Any] | None) -> bytes:
    """Options as canonical JSON; ``None`` values are dropped ({"dimensions": None} == {})."""
    clean = {k: v for k, v in (options or {}).items() if v is not None}
    return orjson.dumps(clean, option=orjson.OPT_SORT_KEYS)


def item_key(
    fingerprint: str,
    item: EngineInput,
    *,
    prompt_role: str,
    options: Mapping[str, Any] | None = None,
) -> str:
    """The cache key of one input. ``options`` must hold everything that changes the stored
    vector (e.g. ``dimensions`` if the caller caches truncated vectors, ``truncate``)."""
    h = hashlib.sha256()
    for part in (
        KEY_VERSION,
        fingerprint.encode(),
        modality(item).encode(),
        prompt_role.encode(),
        canonical_options(options),
        content_bytes(item),
    ):
        h.update(struct.pack("<Q", len(part)))
        h.update(part)
    return CACHE_PREFIX + h.hexdigest()


# ---- values --------------------------------------------------------------------------------
_MAGIC = b"MEMB"
_CODEC_VERSION = 1
_HEADER = struct.Struct("<4sBBBxQI")  # magic, version, dtype code, ndim, pad, n_tokens, extras
_DTYPES: dict[int, np.dtype] = {0: np.dtype("<f4"), 1: np.dtype("<f2"), 2: np.dtype("<f8")}
_DTYPE_CODES = {dt: code for code, dt in _DTYPES.items()}


def encode_embedding(emb: Embedding) -> bytes:
    vectors = np.asarray(emb.vectors)
    dtype = vectors.dtype.newbyteorder("<")
    code = _DTYPE_CODES.get(dtype)
    if code is None:
        code, dtype = 0, _DTYPES[0]
    data = np.ascontiguousarray(vectors, dtype=dtype)
    extras = orjson.dumps(emb.extras, option=orjson.OPT_SERIALIZE_NUMPY) if emb.extras else b""
    header = _HEADER.pack(_MAGIC, _CODEC_VERSION, code, data.ndim, emb.n_tokens, len(extras))
    shape = struct.pack(f"<{data.ndim}Q", *data.shape)
    return b"".join((header, shape, extras, data.tobytes()))


def decode_embedding(blob: bytes) -> Embedding:
    magic, version, code, ndim, n_tokens, n_extras = _HEADER.unpack_from(blob, 0)
    if magic != _MAGIC or version != _CODEC_VERSION or code not in _DTYPES:
        raise ValueError("not an encoded embedding")
    off = _HEADER.size
    shape = struct.unpack_from(f"<{ndim}Q", blob, off)
    off += 8 * ndim
    extras = orjson.loads(blob[off : off + n_extras]) if n_extras else {}
    off += n_extras
    dtype = _DTYPES[code]
    count = int(np.prod(shape, dtype=np.int64))
    if len(blob) - off != count * dtype.itemsize:
        raise ValueError("truncated embedding value")
    vectors = np.frombuffer(blob, dtype=dtype, count=count, offset=off).reshape(shape)
    return Embedding(vectors=vectors.astype(dtype.newbyteorder("="), copy=True), n_tokens=n_tokens,
                     extras=extras)  # fmt: skip


# ---- request policy ------------------------------------------------------------------------
@dataclass(frozen=True)
class CachePolicy:
    read: bool = True
    write: bool = True

    @classmethod
    def from_request(cls, cache_control: str | None, *, enabled: bool = True) -> CachePolicy:
        """``--no-cache`` off → nothing; ``no-store`` → nothing; ``no-cache`` → write only."""
        if not enabled:
            return cls(read=False, write=False)
        tokens = {t.strip().split("=", 1)[0].lower() for t in (cache_control or "").split(",")}
        if "no-store" in tokens:
            return cls(read=False, write=False)
        if "no-cache" in tokens:
            return cls(read=False, write=True)
        return cls()


# ---- the cache -----------------------------------------------------------------------------
@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    writes: int = 0
    skipped: int = 0  # lookups not made because Redis was unreachable
    errors: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))


class _Availability:
    """Log an outage once, skip Redis while it is down, and try again every few seconds."""

    def __init__(self, retry_interval: float) -> None:
        self.retry_interval = retry_interval
        self._down_until = 0.0
        self._down = False
        self._lock = threading.Lock()

    def usable(self) -> bool:
        return not self._down or time.monotonic() >= self._down_until

    def failed(self, exc: BaseException) -> None:
        with self._lock:
            if not self._down:
                log.warning(
                    "embedding cache disabled: Redis is unreachable (%s: %s); requests are "
                    "computed without it and the connection is retried every %.0f s",
                    type(exc).__name__,
                    exc,
                    self.retry_interval,
                )
            self._down = True
            self._down_until = time.monotonic() + self.retry_interval

    def succeeded(self) -> None:
        if self._down:
            with self._lock:
                if self._down:
                    log.info("embedding cache: Redis is reachable again")
                self._down = False


class _CacheBase:
    def __init__(self, *, ttl: int, enabled: bool = True, retry_interval: float = 5.0) -> None:
        self.ttl = ttl if ttl > 0 else NO_EXPIRY_TTL
        self.enabled = enabled
        self.stats = CacheStats()
        self._avail = _Availability(retry_interval)
        self._pending_hits = 0
        self._pending_misses = 0

    def _flush_counters(self, pipe: Any) -> None:
        if self._pending_hits:
            pipe.incrby(STATS_HITS, self._pending_hits)
        if self._pending_misses:
            pipe.incrby(STATS_MISSES, self._pending_misses)
        self._pending_hits = self._pending_misses = 0

    def _count(self, blobs: Sequence[bytes | None]) -> list[Embedding | None]:
        out: list[Embedding | None] = []
        for blob in blobs:
            emb = None
            if blob is not None:
                try:
                    emb = decode_embedding(blob)
                except (ValueError, struct.error):
                    self.stats.errors += 1
            out.append(emb)
        hits = sum(e is not None for e in out)
        self.stats.hits += hits
        self.stats.misses += len(out) - hits
        self._pending_hits += hits
        self._pending_misses += len(out) - hits
        return out

    def _skip(self, n: int) -> list[Embedding | None]:
        self.stats.skipped += n
        self.stats.misses += n
        return [None] * n

    @property
    def available(self) -> bool:
        return self.enabled and self._avail.usable()


class EmbeddingCache(_CacheBase):
    """Async cache for the server. ``client_factory`` makes a ``redis.asyncio`` client; one is
    created per event loop (a client cannot be shared across loops)."""

    def __init__(
        self,
        client_factory: Callable[[], redis.asyncio.Redis] | None,
        *,
        ttl: int,
        enabled: bool = True,
        retry_interval: float = 5.0,
    ) -> None:
        super().__init__(ttl=ttl, enabled=enabled and client_factory is not None,
                         retry_interval=retry_interval)  # fmt: skip
        self._factory = client_factory
        self._client: redis.asyncio.Redis | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def from_settings(cls, handle: Any, settings: Any) -> EmbeddingCache:
        return cls(
            (lambda: handle.async_client(socket_timeout=5.0)) if handle is not None else None,
            ttl=settings.cache_ttl,
            enabled=settings.cache,
        )

    def _redis(self) -> redis.asyncio.Redis:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            assert self._factory is not None
            self._client = self._factory()
            self._loop = loop
        return self._client

    async def get_many(self, keys: Sequence[str | None]) -> list[Embedding | None]:
        """One MGET for a whole request; ``None`` keys (items not to look up) are misses."""
        wanted = [k for k in keys if k is not None]
        if not wanted:
            return [None] * len(keys)
        if not self.available:
            return self._skip_keys(keys)
        try:
            pipe = self._redis().pipeline(transaction=False)
            pipe.mget(wanted)
            self._flush_counters(pipe)
            blobs = (await pipe.execute())[0]
        except REDIS_DOWN as exc:
            self._avail.failed(exc)
            return self._skip_keys(keys)
        self._avail.succeeded()
        found = iter(self._count(blobs))
        return [next(found) if k is not None else None for k in keys]

    def _skip_keys(self, keys: Sequence[str | None]) -> list[Embedding | None]:
        self._skip(sum(k is not None for k in keys))
        return [None] * len(keys)

    async def set_many(self, items: Mapping[str, Embedding]) -> None:
        if not items or not self.available:
            return
        try:
            pipe = self._redis().pipeline(transaction=False)
            for key, emb in items.items():
                pipe.set(key, encode_embedding(emb), ex=self.ttl)
            self._flush_counters(pipe)
            await pipe.execute()
        except REDIS_DOWN as exc:
            self._avail.failed(exc)
            return
        self._avail.succeeded()
        self.stats.writes += len(items)

    async def flush_counters(self) -> None:
        """Push pending hit/miss counts now (they otherwise ride on the next pipeline)."""
        if not (self._pending_hits or self._pending_misses) or not self.available:
            return
        pipe = self._redis().pipeline(transaction=False)
        self._flush_counters(pipe)
        try:
            await pipe.execute()
        except REDIS_DOWN as exc:
            self._avail.failed(exc)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.flush_counters()
        if self._client is not None:
            await self._client.aclose()
            self._client = None


class SyncEmbeddingCache(_CacheBase):
    """The same cache over a synchronous client (workers)."""

    def __init__(
        self, client: redis.Redis, *, ttl: int, enabled: bool = True, retry_interval: float = 5.0
    ) -> None:
        super().__init__(ttl=ttl, enabled=enabled, retry_interval=retry_interval)
        self._client = client

    def get_many(self, keys: Sequence[str | None]) -> list[Embedding | None]:
        wanted = [k for k in keys if k is not None]
        if not wanted:
            return [None] * len(keys)
        if not self.available:
            self._skip(len(wanted))
            return [None] * len(keys)
        try:
            pipe = self._client.pipeline(transaction=False)
            pipe.mget(wanted)
            self._flush_counters(pipe)
            blobs = pipe.execute()[0]
        except REDIS_DOWN as exc:
            self._avail.failed(exc)
            self._skip(len(wanted))
            return [None] * len(keys)
        self._avail.succeeded()
        found = iter(self._count(blobs))
        return [next(found) if k is not None else None for k in keys]

    def set_many(self, items: Mapping[str, Embedding]) -> None:
        if not items or not self.available:
            return
        try:
            pipe = self._client.pipeline(transaction=False)
            for key, emb in items.items():
                pipe.set(key, encode_embedding(emb), ex=self.ttl)
            self._flush_counters(pipe)
            pipe.execute()
        except REDIS_DOWN as exc:
            self._avail.failed(exc)
            return
        self._avail.succeeded()
        self.stats.writes += len(items)


async def redis_counters(client: redis.asyncio.Redis) -> dict[str, int]:
    """The shared hit/miss counters (all servers and workers) for metrics."""
    hits, misses = await client.mget([STATS_HITS, STATS_MISSES])
    return {"hits": int(hits or 0), "misses": int(misses or 0)}
