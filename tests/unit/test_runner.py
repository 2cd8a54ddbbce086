"""The MLX-thread runner's batching rules, on a tiny numpy adapter (no model needed)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from app.engine.base import Embedding, ModelInfo, Prepared, TextInput
from app.engine.runner import Engine
from app.errors import InternalError, Overloaded


class RecordingAdapter:
    info = ModelInfo("fake", "pooled", 4, ("text",), 64, "fp")

    def __init__(self, delay: float = 0.0) -> None:
        self.batches: list[list[str]] = []
        self.delay = delay
        self.gate = threading.Event()
        self.gate.set()

    def prepare(self, item, *, truncate=False) -> Prepared:
        return Prepared(n_tokens=len(item.text.split()), payload=item.text)

    def forward(self, batch):
        self.gate.wait()
        texts = [p.payload for p in batch]
        self.batches.append(texts)
        time.sleep(self.delay)
        if any("BOOM" in t for t in texts):
            raise ValueError("bad item")
        return [
            Embedding(np.full(4, len(t), np.float32), p.n_tokens)
            for t, p in zip(texts, batch, strict=True)
        ]


def _engine(adapter, **kw) -> Engine:
    engine = Engine(lambda: adapter, **kw).start()
    engine.wait_ready(5)
    return engine


def _prep(engine, *texts):
    return [engine.prepare(TextInput(t)) for t in texts]


def test_lone_request_does_not_wait_for_batch_window() -> None:
    engine = _engine(RecordingAdapter(), max_wait_ms=2000)
    try:
        t0 = time.perf_counter()
        out = engine.embed_blocking(_prep(engine, "one two"))
        assert time.perf_counter() - t0 < 0.5  # far below the 2 s window
        assert out[0].n_tokens == 2
    finally:
        engine.close()


def test_requests_queued_while_busy_share_one_batch() -> None:
    adapter = RecordingAdapter()
    engine = _engine(adapter, max_batch_size=8)
    try:
        adapter.gate.clear()
        first = engine.submit(_prep(engine, "a"))
        time.sleep(0.05)  # the MLX thread is now blocked inside forward(["a"])
        futs = [engine.submit(_prep(engine, f"r{i}")) for i in range(5)]
        adapter.gate.set()
        first.result(5)
        assert [f.result(5)[0].n_tokens for f in futs] == [1] * 5
        assert adapter.batches == [["a"], ["r0", "r1", "r2", "r3", "r4"]]
    finally:
        engine.close()


def test_a_failing_request_fails_alone() -> None:
    adapter = RecordingAdapter()
    engine = _engine(adapter, max_batch_size=8)
    try:
        adapter.gate.clear()
        blocker = engine.submit(_prep(engine, "x"))
        time.sleep(0.05)
        good1 = engine.submit(_prep(engine, "good one"))
        bad = engine.submit(_prep(engine, "BOOM here", "fine"))
        good2 = engine.submit(_prep(engine, "good two"))
        adapter.gate.set()
        blocker.result(5)
        assert good1.result(5)[0].n_tokens == 2
        assert good2.result(5)[0].n_tokens == 2
        with pytest.raises(InternalError, match="bad item"):
            bad.result(5)
    finally:
        engine.close()


def test_big_request_is_split_into_max_batches() -> None:
    adapter = RecordingAdapter()
    engine = _engine(adapter, max_batch_size=3)
    try:
        out = engine.embed_blocking(_prep(engine, *[f"w{i}" for i in range(7)]))
        assert len(out) == 7
        assert [len(b) for b in adapter.batches] == [3, 3, 1]
    finally:
        engine.close()


def test_cancelled_request_is_dropped_before_compute() -> None:
    adapter = RecordingAdapter()
    engine = _engine(adapter)
    try:
        adapter.gate.clear()
        blocker = engine.submit(_prep(engine, "x"))
        time.sleep(0.05)
        gone = engine.submit(_prep(engine, "client went away"))
        engine._abandon(gone)
        adapter.gate.set()
        blocker.result(5)
        engine.embed_blocking(_prep(engine, "after"))
        assert ["client went away"] not in adapter.batches
        assert all("client went away" not in b for b in adapter.batches)
    finally:
        engine.close()


def test_bounded_queue_answers_overloaded() -> None:
    adapter = RecordingAdapter()
    engine = _engine(adapter, max_queue=4)
    try:
        adapter.gate.clear()
        engine.submit(_prep(engine, "x"))
        time.sleep(0.05)
        engine.submit(_prep(engine, "a", "b", "c"))
        with pytest.raises(Overloaded) as err:
            engine.submit(_prep(engine, "d", "e"))
        assert err.value.status == 503 and err.value.headers["Retry-After"]
        adapter.gate.set()
    finally:
        engine.close()


def test_waits_for_announced_items_only() -> None:
    adapter = RecordingAdapter()
    engine = _engine(adapter, max_batch_size=8, max_wait_ms=300)
    try:
        with engine.incoming(1):
            fut = engine.submit(_prep(engine, "early"))
            time.sleep(0.05)
            late = engine.submit(_prep(engine, "late"))
        fut.result(5), late.result(5)
        assert adapter.batches == [["early", "late"]]
    finally:
        engine.close()


def test_submitting_with_the_announcement_withdraws_it_at_once() -> None:
    adapter = RecordingAdapter()
    engine = _engine(adapter, max_batch_size=8, max_wait_ms=2000)
    try:
        with engine.incoming(1) as announced:
            t0 = time.perf_counter()
            early = engine.submit(_prep(engine, "early"))
            time.sleep(0.05)  # the MLX thread holds "early", waiting for the announced item
            late = engine.submit(_prep(engine, "late"), announced=announced)
            late.result(5), early.result(5)
            elapsed = time.perf_counter() - t0
            time.sleep(0.05)  # still inside the context: nothing waits for it any more
        assert adapter.batches == [["early", "late"]]
        assert elapsed < 1.0  # far below the 2 s window
        assert engine._incoming == 0
    finally:
        engine.close()
