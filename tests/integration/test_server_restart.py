"""The whole program as a user runs it: the server command with its embedded redis-server and
in-process worker, a second `mlx-embeddings-worker` process, and a restart on the same data dir."""

from __future__ import annotations

import base64
import io
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from server_process import REPO, ServerProcess

pytestmark = pytest.mark.slow


def _pages(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        im = Image.fromarray((rng.random((90, 120, 3)) * 255).astype("uint8"))
        buf = io.BytesIO()
        im.save(buf, "PNG")
        out.append("data:image/png;base64," + base64.b64encode(buf.getvalue()).decode())
    return out


def _wait_done(url: str, job_id: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        st = httpx.get(f"{url}/v1/embeddings/jobs/{job_id}").json()
        if st["status"] in ("succeeded", "failed", "cancelled") or time.monotonic() > deadline:
            return st
        time.sleep(0.1)


def test_results_survive_a_restart_and_a_second_worker_joins(tiny_colqwen_path: Path) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="mlxrs", dir="/tmp"))
    model = ["--model", str(tiny_colqwen_path), "--served-model-name", "tiny"]
    server = ServerProcess(model, data_dir=data_dir).wait_healthy()
    worker = None
    try:
        # a second terminal: a dedicated worker joins the embedded Redis by data dir alone
        worker = subprocess.Popen(
            [sys.executable, "-m", "workers.cli", *model, "--data-dir", str(data_dir)],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while httpx.get(server.url + "/health").json()["workers"]["alive"] < 2:
            assert time.monotonic() < deadline, "the second worker never registered"
            time.sleep(0.2)

        pages = _pages(12, 0)
        job = httpx.post(
            server.url + "/v1/embeddings/jobs", json={"model": "tiny", "input": pages}
        ).json()
        assert _wait_done(server.url, job["id"])["status"] == "succeeded"
        before = httpx.get(f"{server.url}/v1/embeddings/jobs/{job['id']}/result").json()
        inline = httpx.post(
            server.url + "/v1/embeddings",
            json={"model": "tiny", "input": pages[:2]},
            headers={"Cache-Control": "no-store"},
        ).json()
        for a, b in zip(before["data"][:2], inline["data"], strict=True):
            np.testing.assert_allclose(a["embedding"], b["embedding"], atol=1e-5)
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(20)
        assert server.stop() == 0

    again = ServerProcess(model, data_dir=data_dir).wait_healthy()
    try:
        after = httpx.get(f"{again.url}/v1/embeddings/jobs/{job['id']}/result").json()
        assert after == before
        # the cache survived too: the same pages are all hits
        r = httpx.post(again.url + "/v1/embeddings", json={"model": "tiny", "input": pages[:4]})
        assert r.headers["x-cache"] == "hit"
    finally:
        again.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def _redis_pid(data_dir: Path) -> int:
    return int((data_dir / "redis" / "redis.pid").read_text().strip())


def test_a_killed_embedded_redis_is_restarted_and_the_cache_hits_again(
    tiny_colqwen_path: Path,
) -> None:
    model = ["--model", str(tiny_colqwen_path), "--served-model-name", "tiny"]
    server = ServerProcess(model).wait_healthy()
    try:
        body = {"model": "tiny", "input": ["a query that is cached"]}
        assert httpx.post(server.url + "/v1/embeddings", json=body).headers["x-cache"] == "miss"
        assert httpx.post(server.url + "/v1/embeddings", json=body).headers["x-cache"] == "hit"
        time.sleep(1.5)  # appendfsync everysec
        pid = _redis_pid(server.data_dir)
        os.kill(pid, 9)
        deadline = time.monotonic() + 20
        while True:
            health = httpx.get(server.url + "/health").json()
            if health["redis"].get("restarts") == 1 and health["redis"]["status"] == "ok":
                break
            assert time.monotonic() < deadline, health
            time.sleep(0.2)
        assert _redis_pid(server.data_dir) != pid
        r = httpx.post(server.url + "/v1/embeddings", json=body)
        assert r.status_code == 200 and r.headers["x-cache"] == "hit"  # the AOF came back
        assert health["jobs_api"] == "open" and health["workers"]["alive"] == 1
    finally:
        assert server.stop() == 0


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_start_up_stops_the_server_and_its_redis(
    tiny_colqwen_path: Path, sig: signal.Signals
) -> None:
    for wait_for_http in (False, True):
        server = ServerProcess(["--model", str(tiny_colqwen_path)])
        try:
            if wait_for_http:  # Sanic is up; the model may still be loading
                deadline = time.monotonic() + 60
                while True:
                    try:
                        httpx.get(server.url + "/health", timeout=1)
                        break
                    except httpx.TransportError:
                        assert time.monotonic() < deadline
                        time.sleep(0.05)
            else:
                time.sleep(0.5)
            server.proc.send_signal(sig)
            try:
                rc = server.proc.wait(20)
            except subprocess.TimeoutExpired:
                server.proc.kill()
                server.proc.wait(10)
                pytest.fail(f"not stopped 20 s after {sig.name}:\n{server.output()}")
            assert rc in (0, 130), server.output()
            deadline = time.monotonic() + 10
            pidfile = server.data_dir / "redis" / "redis.pid"
            while pidfile.exists() and _alive(int(pidfile.read_text() or 0)):
                assert time.monotonic() < deadline, "the embedded redis-server outlived the server"
                time.sleep(0.1)
        finally:
            server.stop()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, ValueError):
        return False
    return pid > 0


RACE = """
import asyncio, os, signal, sys
from sanic import Sanic, text
from app import server

base = Sanic if sys.argv[1] == "plain" else server.EmbeddingsApp


class App(base):
    def set_serving(self, serving):
        if serving and sys.argv[2] == "paused":  # between start-up and serving: loop paused
            os.kill(os.getpid(), signal.SIGTERM)
        super().set_serving(serving)


app = App("race")
app.config.TOUCHUP = False
app.add_route(lambda request: text("ok"), "/")


async def signal_in_after_start(app, _loop=None):
    if sys.argv[2] != "paused":
        await asyncio.sleep(float(sys.argv[2]))
        os.kill(os.getpid(), signal.SIGTERM)


app.register_listener(signal_in_after_start, "after_server_start")
if base is not Sanic:
    app.register_listener(server._note_signals, "after_server_start")
    app.register_listener(server._mark_stopping, "before_server_stop")
app.run(host="127.0.0.1", port=int(sys.argv[3]), single_process=True, motd=False)
"""


def _race(kind: str, when: str) -> int | None:
    from server_process import REPO, free_port

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", RACE, kind, when, str(free_port())],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        return proc.wait(8)
    except subprocess.TimeoutExpired:
        return None
    finally:
        proc.kill()
        proc.wait(5)


@pytest.mark.parametrize("when", ["0.0", "0.2", "paused"])
def test_a_stop_sanic_loses_in_start_up_is_made_again(when: str) -> None:
    """A SIGTERM while Sanic's after-start listeners run (at once, or 0.2 s in), or while the
    loop is paused between start-up and serving: the server's app stops (exit 0); plain
    Sanic on uvloop serves on (the control, for the paused case: still running after 8 s)."""
    assert _race("app", when) == 0
    if when == "paused":
        assert _race("plain", when) is None
