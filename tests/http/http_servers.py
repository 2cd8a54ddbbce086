"""Real test servers on real sockets (127.0.0.1, free ports), each on a background thread with
its own event loop, serving the fake adapter through the real Engine runner."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
from sanic import Sanic

TESTS_DIR = Path(__file__).resolve().parents[1]
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))

from fake_adapter import FakeAdapter, fake_engine  # noqa: E402

from app.engine.runner import Engine  # noqa: E402
from app.server import create_app  # noqa: E402
from app.settings import Settings  # noqa: E402

MV_MODEL = "fake/colqwen2.5-mv"
POOLED_MODEL = "fake/minilm-pooled"

# Limits of the multi-vector test server (small, so every limit is cheap to hit).
MV_SETTINGS = Settings(
    model="/models/fake-colqwen",
    served_model_name=MV_MODEL,
    max_inputs=8,
    max_tokens_per_request=40,
    max_body_bytes=256 * 1024,
    max_batch_size=16,
    max_wait_ms=1000.0,  # long on purpose: a lone request must still not wait for it
    blas="off",
)
POOLED_SETTINGS = dataclasses.replace(MV_SETTINGS, model=POOLED_MODEL, served_model_name="")


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.setblocking(False)
    return sock


class ServerThread:
    """A Sanic app served on a pre-bound socket by a thread running its own event loop."""

    def __init__(self, app: Sanic) -> None:
        self.app = app
        self._sock = free_socket()
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"server-{self.port}", daemon=True)

    def start(self) -> ServerThread:
        self._thread.start()
        if not self._started.wait(30):
            raise RuntimeError("test server did not start")
        if self._error is not None:
            raise RuntimeError("test server failed to start") from self._error
        return self

    def stop(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._serve())
        finally:
            self._loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        try:
            server = await self.app.create_server(
                sock=self._sock, return_asyncio_server=True, access_log=False
            )
            assert server is not None
            await server.startup()
            await server.before_start()
            await server.after_start()
        except BaseException as exc:
            self._error = exc
            self._started.set()
            raise
        self._started.set()
        await self._stop.wait()
        await server.before_stop()
        close = server.close()
        if close is not None:
            await close
        # Drain keep-alive connections (as Sanic's own runner does), then drop the rest.
        for conn in list(server.connections):
            conn.close_if_idle()
        for _ in range(20):
            if not server.connections:
                break
            await asyncio.sleep(0.05)
        for conn in list(server.connections):
            conn.abort()
        await server.after_stop()
        await asyncio.sleep(0)
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@dataclasses.dataclass
class Served:
    url: str
    settings: Settings
    engine: Engine
    adapter: FakeAdapter
    app: Sanic

    @property
    def model(self) -> str:
        return self.settings.model_name

    def client(self, **kw: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kw)

    def openai(self):
        from openai import OpenAI

        return OpenAI(base_url=self.url + "/v1", api_key="unused", max_retries=0, timeout=30)


def serve(
    settings: Settings,
    adapter: FakeAdapter,
    *,
    engine: Engine | None = None,
    resolver: Any = None,
    backends: Any = None,
    wait_ready: bool = True,
) -> tuple[Served, ServerThread]:
    engine = engine or fake_engine(
        adapter,
        max_batch_size=settings.max_batch_size,
        max_wait_ms=settings.max_wait_ms,
        max_queue=settings.max_queue,
    )
    if wait_ready:
        engine.wait_ready(30)
    app = create_app(settings, engine, resolver=resolver, backends=backends)
    thread = ServerThread(app).start()
    return Served(thread.url, settings, engine, adapter, app), thread


def serve_real_model(path: str, name: str, **overrides: Any):
    """A real MLX model (tiny models, MiniLM) behind a test server: a generator for module
    fixtures (``yield from serve_real_model(...)``)."""
    from app.engine import load_engine

    settings = dataclasses.replace(MV_SETTINGS, model=path, served_model_name=name, max_inputs=64,
                                   max_tokens_per_request=100_000, **overrides)  # fmt: skip
    engine = load_engine(settings)
    engine.wait_ready(120)
    served, thread = serve(settings, None, engine=engine)  # type: ignore[arg-type]
    yield served
    thread.stop()
    engine.close()
