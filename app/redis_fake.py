"""The in-memory fallback when no redis-server exists: a fakeredis server with a memory bound.

fakeredis has no ``maxmemory``, so without a bound the cache would grow in the server's RAM for
the whole ``--cache-ttl``. :func:`bounded_fake_server` gives every database of the fake server
the embedded Redis's policy, ``volatile-lru`` under ``--redis-maxmemory``: string values that
carry a TTL (only cache entries do) are counted (key + value + a fixed per-key overhead) and the
least recently read or written ones are evicted once the total is over the bound. Keys without
a TTL (job data) are never evicted, exactly as in the embedded Redis.

It relies on fakeredis' ``Database`` (a private class; pyproject pins fakeredis below 3, and
tests/unit/test_redis_fallback.py checks the eviction through real fakeredis clients).
"""

from __future__ import annotations

import heapq
import re
import threading
from collections import OrderedDict, defaultdict
from typing import Any

import fakeredis
from fakeredis._core._database import Database

from app.redis_binary import install_hint

# Per-key bookkeeping a real Redis spends besides the key and value bytes (dict entry, robj,
# sds headers, expiry entry): about this much on 64-bit builds.
PER_KEY_OVERHEAD = 96

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1024,
    "m": 1000**2,
    "mb": 1024**2,
    "g": 1000**3,
    "gb": 1024**3,
}


def parse_memory(value: str | int) -> int:
    """Bytes in a Redis memory setting: ``1gb`` = 1024**3, ``1g`` = 10**9, ``100mb``, ``512``."""
    if isinstance(value, int):
        return value
    m = re.fullmatch(r"\s*(\d+)\s*([kmg]?b?)\s*", value.lower())
    if m is None:
        raise ValueError(f"not a Redis memory size: {value!r} (e.g. 1gb, 512mb, 100000000)")
    return int(m.group(1)) * _UNITS[m.group(2)]


class BoundedDatabase(Database):
    """A fakeredis database evicting TTL'd string keys, least recently used first, over a bound.

    Every command runs under the server lock, so the bookkeeping needs no lock of its own."""

    def __init__(self, lock: threading.Lock | None, max_bytes: int) -> None:
        super().__init__(lock)
        self.max_bytes = max_bytes
        self.used_bytes = 0
        self.evicted_keys = 0
        self._lru: OrderedDict[bytes, int] = OrderedDict()  # evictable key -> counted bytes

    # -- bookkeeping
    def _untrack(self, key: bytes) -> None:
        size = self._lru.pop(key, None)
        if size is not None:
            self.used_bytes -= size

    def _track(self, key: bytes) -> None:
        self._untrack(key)
        item = self._dict.get(key)
        if item is None or item.expireat is None or not isinstance(item.value, bytes):
            return
        size = len(key) + len(item.value) + PER_KEY_OVERHEAD
        self._lru[key] = size
        self.used_bytes += size
        self._evict()

    def _evict(self) -> None:
        """Drop least recently used keys until under the bound. The key just written is last
        in the LRU order and is kept even when it alone is over (Redis evicts before a write)."""
        if self.max_bytes <= 0:
            return
        while self.used_bytes > self.max_bytes and len(self._lru) > 1:
            key, size = self._lru.popitem(last=False)
            self.used_bytes -= size
            if self._dict.pop(key, None) is not None:
                self.evicted_keys += 1
                if self.has_watch(key):
                    self.notify_watch(key)

    # -- fakeredis Database hooks: every write of a value or TTL ends in schedule_expiry
    def schedule_expiry(self, key: bytes, expireat: float | None) -> None:
        super().schedule_expiry(key, expireat)
        self._track(key)

    def __getitem__(self, key: bytes) -> Any:
        try:
            item = super().__getitem__(key)
        except KeyError:
            self._untrack(key)  # expired on read
            raise
        if key in self._lru:
            self._lru.move_to_end(key)
        return item

    def __delitem__(self, key: bytes) -> None:
        super().__delitem__(key)
        self._untrack(key)

    def clear(self) -> None:
        super().clear()
        self._lru.clear()
        self.used_bytes = 0

    def swap(self, other: Database) -> None:
        super().swap(other)
        if isinstance(other, BoundedDatabase):
            self._lru, other._lru = other._lru, self._lru
            self.used_bytes, other.used_bytes = other.used_bytes, self.used_bytes

    def _remove_expired(self) -> None:
        # As fakeredis' own, plus the bookkeeping.
        heap = self._expiry_heap
        while heap and heap[0][0] < self.time:
            _, key = heapq.heappop(heap)
            item = self._dict.get(key)
            if item is not None and self.expired(item):
                del self._dict[key]
                self._untrack(key)


def bounded_fake_server(max_bytes: int) -> fakeredis.FakeServer:
    """A fakeredis server whose databases evict like ``maxmemory`` + ``volatile-lru``."""
    server = fakeredis.FakeServer()
    lock = server.lock
    server.dbs = defaultdict(lambda: BoundedDatabase(lock, max_bytes))
    return server


def fallback_warning(maxmemory: str, platform: str | None = None) -> str:
    """The one warning line of the fakeredis fallback: what is lost and the command to fix it."""
    bound = f"capped at {maxmemory} (--redis-maxmemory, LRU)"
    if parse_memory(maxmemory) <= 0:
        bound = "UNBOUNDED (--redis-maxmemory 0)"
    return (
        "No redis-server or valkey-server found: using an in-memory fakeredis. Lost: the cache "
        "and queued jobs are NOT persistent (gone at restart) and mlx-embeddings-worker "
        f"processes cannot join; the cache is {bound}. Fix: `{install_hint(platform)}` "
        "(then restart; or pass --redis-url / --redis-server)."
    )
