"""The one embed pipeline (cache read -> prepare -> compute -> cache write) on the FakeAdapter
and an in-memory Redis: what the inline path and every worker run."""

from __future__ import annotations

import asyncio

import fakeredis
import numpy as np
import pytest
from fake_adapter import FakeAdapter, fake_engine
from PIL import Image

from app.cache import CachePolicy, EmbeddingCache
from app.engine.base import ImageInput, TextInput
from app.errors import InputTooLong
from app.pipeline import Pipeline, should_queue
from app.settings import Settings


def _params(n: int) -> list[str]:
    return [f"input[{i}]" for i in range(n)]


@pytest.fixture
def engine():
    e = fake_engine(FakeAdapter(max_tokens=8))
    e.wait_ready(10)
    yield e
    e.close()


def _pipeline(engine, server: fakeredis.FakeServer | None) -> Pipeline:
    cache = None
    if server is not None:
        cache = EmbeddingCache(lambda: fakeredis.FakeAsyncRedis(server=server), ttl=60)
    return Pipeline(engine, cache)


def _run(pipeline: Pipeline, inputs, policy: CachePolicy | None = None):
    policy = policy or CachePolicy()
    keys = pipeline.keys(inputs, policy, truncate=False)
    return asyncio.run(pipeline.run(inputs, _params(len(inputs)), keys, policy, truncate=False))


def test_partial_hits_compute_only_misses_and_are_bit_identical(engine):
    server = fakeredis.FakeServer()
    pipe = _pipeline(engine, server)
    inputs = [TextInput(f"text {i}") for i in range(10)]
    _run(pipe, inputs[:7])
    before = engine.items_computed
    second = _run(pipe, inputs)
    assert engine.items_computed - before == 3
    fresh = _run(_pipeline(engine, None), inputs)
    for a, b in zip(second, fresh, strict=True):
        assert a.vectors.tobytes() == b.vectors.tobytes() and a.n_tokens == b.n_tokens
    calls = engine.forward_calls
    _run(pipe, inputs)
    assert engine.forward_calls == calls  # all hits: no forward pass at all


def test_no_cache_revalidates_and_no_store_leaves_nothing(engine):
    server = fakeredis.FakeServer()
    sync = fakeredis.FakeRedis(server=server)
    pipe = _pipeline(engine, server)
    inputs = [TextInput("a"), TextInput("b")]
    _run(pipe, inputs, CachePolicy.from_request("no-store"))
    assert not sync.keys("mlxemb:c:*")
    before = engine.items_computed
    _run(pipe, inputs, CachePolicy.from_request("no-cache"))
    _run(pipe, inputs, CachePolicy.from_request("no-cache"))
    assert engine.items_computed - before == 4  # never read, always recomputed
    assert len(sync.keys("mlxemb:c:*")) == 2
    _run(pipe, inputs)
    assert engine.items_computed - before == 4


def test_item_error_names_its_input(engine):
    pipe = _pipeline(engine, None)
    with pytest.raises(InputTooLong) as info:
        _run(pipe, [TextInput("ok"), TextInput("far too many words for this tiny fake model")])
    assert info.value.param == "input[1]"
    assert info.value.message.startswith("input[1]: ")


def test_measure_counts_image_tokens_and_compute_completes_them(engine):
    pipe = _pipeline(engine, None)
    img = ImageInput(Image.fromarray(np.zeros((10, 20, 3), np.uint8)), "h")
    inputs = [TextInput("a b"), img]
    measured = asyncio.run(pipe.measure(inputs, _params(2), False))
    assert [p.kind for p in measured] == ["text", "image"]
    out = asyncio.run(
        pipe.compute(
            inputs, _params(2), [None, None], CachePolicy(), truncate=False, measured=measured
        )  # fmt: skip
    )
    assert [e.n_tokens for e in out] == [2, 6]


def test_should_queue_threshold_and_pixel_budget():
    from app.engine.base import Prepared

    s = Settings(model="x", queue_threshold=2, queue_pixel_budget=1000)
    img = Prepared(n_tokens=4, payload=None, kind="image", pixels=100)
    text = Prepared(n_tokens=4, payload=None)
    assert not should_queue([img, img, text, text, text], s)
    assert should_queue([img, img, img], s)
    assert should_queue([Prepared(n_tokens=4, payload=None, kind="image", pixels=2000)], s)
