"""The runner's two lanes, token budget, bulk round-robin and length grouping, on a fake
adapter whose forward sleeps per padded token (deterministic: no model, no timing asserts)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from app.engine.base import Embedding, ModelInfo, Prepared
from app.engine.runner import Engine
from app.engine.scheduler import BULK, INTERACTIVE, padded_tokens
from app.errors import Overloaded


class TokenAdapter:
    """``forward`` records each batch as (lane tag, n_tokens...) and sleeps per padded token.
    A gate holds the first batch until the test releases it."""

    info = ModelInfo("fake", "pooled", 2, ("text",), 100_000, "fp")

    def __init__(self, per_token: float = 0.0) -> None:
        self.per_token = per_token
        self.batches: list[list[str]] = []
        self.gate = threading.Event()
        self.gate.set()

    def prepare(self, item, *, truncate=False) -> Prepared:
        raise NotImplementedError

    def forward(self, batch: list[Prepared]) -> list[Embedding]:
        self.gate.wait()
        self.batches.append([p.payload for p in batch])
        time.sleep(self.per_token * padded_tokens(len(batch), max(p.n_tokens for p in batch)))
        return [Embedding(np.zeros(2, np.float32), p.n_tokens) for p in batch]


def _items(tag: str, lengths) -> list[Prepared]:
    return [Prepared(n_tokens=n, payload=f"{tag}{i}") for i, n in enumerate(lengths)]


def _engine(adapter: TokenAdapter, **kw) -> Engine:
    kw.setdefault("max_wait_ms", 0)
    engine = Engine(lambda: adapter, **kw).start()
    engine.wait_ready(5)
    return engine


def _wait_for_batches(adapter: TokenAdapter, n: int) -> None:
    deadline = time.monotonic() + 10
    while len(adapter.batches) < n:
        assert time.monotonic() < deadline
        time.sleep(0.001)


def test_a_query_after_bulk_waits_at_most_one_bulk_batch() -> None:
    adapter = TokenAdapter()
    engine = _engine(adapter, max_batch_size=4)
    try:
        adapter.gate.clear()
        bulk = engine.submit(_items("b", [10] * 40), lane=BULK)
        time.sleep(0.05)  # the MLX thread holds bulk batch 1 at the gate
        query = engine.submit(_items("q", [5]), lane=INTERACTIVE)
        adapter.gate.set()
        query.result(5)
        bulk.result(5)
        first_query = next(k for k, b in enumerate(adapter.batches) if "q0" in b)
        assert first_query == 1, adapter.batches[:3]  # right after the one bulk batch in flight
    finally:
        engine.close()


def test_bulk_keeps_moving_while_queries_stream_in() -> None:
    adapter = TokenAdapter(per_token=0.0002)
    engine = _engine(adapter, max_batch_size=4, interactive_burst=3)
    stop = threading.Event()

    def queries() -> None:
        k = 0
        while not stop.is_set():
            engine.embed_blocking(_items(f"q{k}-", [4]), lane=INTERACTIVE)
            k += 1

    streams = [threading.Thread(target=queries) for _ in range(3)]
    try:
        bulk = engine.submit(_items("b", [10] * 40), lane=BULK)
        for t in streams:
            t.start()
        bulk.result(30)
    finally:
        stop.set()
        for t in streams:
            t.join(5)
        engine.close()
    lanes = ["bulk" if any(x.startswith("b") for x in b) else "q" for b in adapter.batches]
    bulk_batches = [b for b, lane in zip(adapter.batches, lanes, strict=True) if lane == "bulk"]
    assert sum(len(b) for b in bulk_batches) == 40
    # while queries keep coming, bulk batches are cut to a quarter (here: 1 item)
    assert max(len(b) for b in bulk_batches[1:]) == 1
    last_bulk = max(k for k, lane in enumerate(lanes) if lane == "bulk")
    run = 0
    for lane in lanes[:last_bulk]:  # while bulk waited: never more than the burst in a row
        run = run + 1 if lane == "q" else 0
        assert run <= 3, lanes
    assert lanes.count("q") > 0


def test_bulk_batches_are_full_again_once_the_queries_stop() -> None:
    adapter = TokenAdapter()
    engine = _engine(adapter, max_batch_size=8, busy_bulk_batch_size=2)
    try:
        engine.embed_blocking(_items("q", [3]), lane=INTERACTIVE)
        engine.embed_blocking(_items("b", [3] * 8), lane=BULK)  # a query 0 s ago: busy
        assert [len(b) for b in adapter.batches[1:]] == [2, 2, 2, 2]
        engine._sched.busy_window = 0.0  # the queries stopped
        engine.embed_blocking(_items("c", [3] * 8), lane=BULK)
        assert len(adapter.batches[-1]) == 8
    finally:
        engine.close()


def test_batches_respect_the_token_budget_and_a_huge_input_runs_alone() -> None:
    adapter = TokenAdapter()
    engine = _engine(adapter, max_batch_size=32, max_batch_tokens=100)
    try:
        lengths = [10, 30, 5, 200, 20, 25, 10, 10, 40, 3]
        items = _items("x", lengths)
        by_name = {p.payload: p.n_tokens for p in items}
        engine.embed_blocking(items, lane=BULK)
        for batch in adapter.batches:
            longest = max(by_name[x] for x in batch)
            assert len(batch) == 1 or padded_tokens(len(batch), longest) <= 100, batch
        assert ["x3"] in adapter.batches  # the 200-token input, alone
        assert sorted(x for b in adapter.batches for x in b) == sorted(by_name)
    finally:
        engine.close()


def test_bulk_owners_take_turns() -> None:
    adapter = TokenAdapter()
    engine = _engine(adapter, max_batch_size=4)
    try:
        adapter.gate.clear()
        big = engine.submit(_items("A", [8] * 40), lane=BULK, owner="job-a")
        time.sleep(0.05)
        small = engine.submit(_items("B", [8] * 4), lane=BULK, owner="job-b")
        adapter.gate.set()
        small.result(5)
        big.result(5)
        first_b = next(k for k, b in enumerate(adapter.batches) if "B0" in b)
        assert first_b == 1, adapter.batches[:3]  # not after all ten batches of A
    finally:
        engine.close()


def test_bulk_items_are_grouped_by_length_to_cut_padding() -> None:
    rng = np.random.default_rng(0)
    lengths = [int(x) for x in rng.integers(4, 120, 256)]
    padding = {}
    for lane in (INTERACTIVE, BULK):
        engine = _engine(TokenAdapter(), max_batch_size=32, max_batch_tokens=1 << 20,
                         max_queue=1000)  # fmt: skip
        try:
            out = engine.embed_blocking(_items("x", lengths), lane=lane)
            assert [e.n_tokens for e in out] == lengths  # results in the request's order
            padding[lane] = 1 - engine.real_tokens / engine.padded_tokens
        finally:
            engine.close()
    assert padding[BULK] < padding[INTERACTIVE] / 3, padding


def test_each_lane_has_its_own_bound() -> None:
    adapter = TokenAdapter()
    engine = _engine(adapter, max_batch_size=2, max_queue=4, max_bulk_queue=10)
    try:
        adapter.gate.clear()
        engine.submit(_items("b", [3] * 10), lane=BULK)
        time.sleep(0.05)
        with pytest.raises(Overloaded) as info:
            engine.submit(_items("c", [3] * 5), lane=BULK)
        assert "bulk lane" in info.value.message and info.value.headers["Retry-After"]
        query = engine.submit(_items("q", [3]), lane=INTERACTIVE)  # a full bulk lane: still ok
        adapter.gate.set()
        query.result(5)
    finally:
        engine.close()


def test_memory_is_released_once_the_queue_runs_dry() -> None:
    released = threading.Event()
    engine = _engine(TokenAdapter(), release_memory=released.set)
    try:
        assert not released.wait(0.1)  # nothing computed yet: nothing to release
        engine.embed_blocking(_items("x", [3, 4]))
        assert released.wait(5)
    finally:
        engine.close()


def _two_models(**kw) -> tuple[Engine, TokenAdapter, TokenAdapter]:
    a, b = TokenAdapter(), TokenAdapter()
    kw.setdefault("max_wait_ms", 0)
    engine = Engine({"a": lambda: a, "b": lambda: b}, **kw).start()
    engine.wait_ready(5)
    return engine, a, b


def test_two_models_on_one_thread_never_share_a_batch() -> None:
    """A batch holds one model's items: each adapter sees only its own, in both lanes, and the
    other model's requests are served in their turn (not starved behind the first's)."""
    engine, a, b = _two_models(max_batch_size=8)
    try:
        a.gate.clear()
        first = engine.submit(_items("a-first", [5]), model="a")
        time.sleep(0.05)  # the MLX thread holds a's batch at the gate; the rest queues up
        futures = []
        for k in range(6):
            model = "ab"[k % 2]
            futures.append(engine.submit(_items(f"{model}{k}-", [3, 4]), model=model))
            futures.append(
                engine.submit(_items(f"{model}bulk{k}-", [7] * 5), lane=BULK, model=model)
            )
        a.gate.set()
        for fut in [first, *futures]:
            fut.result(5)
        assert a.batches and b.batches
        assert all(p.startswith("a") for batch in a.batches for p in batch), a.batches
        assert all(p.startswith("b") for batch in b.batches for p in batch), b.batches
        # interactive items of a model were batched together, not one request per batch
        assert max(len(batch) for batch in b.batches) > 2
        # the views give the single-model API
        assert engine.view("b").embed_blocking(_items("b-view", [2]), 5)[0].n_tokens == 2
        assert b.batches[-1] == ["b-view0"]
    finally:
        engine.close()


def test_each_model_has_its_own_queue_bound() -> None:
    engine, a, _ = _two_models(max_queue=4)
    try:
        a.gate.clear()
        engine.submit(_items("a", [1]), model="a")
        time.sleep(0.05)  # held at the gate
        engine.submit(_items("a", [1] * 4), model="a")  # model a's lane is now full
        with pytest.raises(Overloaded):
            engine.submit(_items("a", [1]), model="a")
        b_fut = engine.submit(_items("b", [1] * 4), model="b")  # b is not refused
        assert engine.queued(INTERACTIVE, "a") == 4 and engine.queued(INTERACTIVE, "b") == 4
        assert engine.queued(INTERACTIVE) == 8
        a.gate.set()
        assert len(b_fut.result(5)) == 4
    finally:
        a.gate.set()
        engine.close()


def test_an_unknown_model_name_is_refused_by_a_several_model_engine() -> None:
    engine, _, _ = _two_models()
    try:
        with pytest.raises(KeyError, match="no model 'c'"):
            engine.view("c")
    finally:
        engine.close()
