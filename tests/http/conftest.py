"""HTTP test fixtures (helpers in http_servers.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from http_servers import (
    MV_MODEL,
    MV_SETTINGS,
    POOLED_MODEL,
    POOLED_SETTINGS,
    FakeAdapter,
    Served,
    ServerThread,
    Settings,
    serve,
)


@pytest.fixture(scope="session")
def mv_server() -> Iterator[Served]:
    """Multi-vector fake (dim 8, 16 tokens per input, 6 tokens per image)."""
    served, thread = serve(
        MV_SETTINGS, FakeAdapter(kind="multi_vector", name=MV_MODEL, dim=8, max_tokens=16)
    )
    yield served
    thread.stop()


@pytest.fixture(scope="session")
def pooled_server() -> Iterator[Served]:
    """Pooled fake (dim 16, matryoshka: accepts smaller ``dimensions``)."""
    served, thread = serve(
        POOLED_SETTINGS,
        FakeAdapter(kind="pooled", name=POOLED_MODEL, dim=16, max_tokens=16, matryoshka=True),
    )
    yield served
    thread.stop()


@pytest.fixture
def make_server() -> Iterator[Callable[..., Served]]:
    """Start extra servers inside one test (stopped at its end)."""
    threads: list[ServerThread] = []

    def make(settings: Settings = MV_SETTINGS, adapter: FakeAdapter | None = None, **kw):
        served, thread = serve(settings, adapter or FakeAdapter(name=settings.model_name), **kw)
        threads.append(thread)
        return served

    yield make
    for thread in threads:
        thread.stop()
