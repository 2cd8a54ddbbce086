"""Cache keys, the value codec, request policy, and per-item lookups (fakeredis)."""

from __future__ import annotations

import asyncio
import logging

import fakeredis
import numpy as np
import pytest
from PIL import Image

from app.cache import (
    NO_EXPIRY_TTL,
    STATS_HITS,
    STATS_MISSES,
    CachePolicy,
    EmbeddingCache,
    SyncEmbeddingCache,
    decode_embedding,
    encode_embedding,
    item_key,
)
from app.engine.base import Embedding, ImageInput, TextInput, TokenInput

FP = "org/model@abc123"


def _img(color=(10, 20, 30), size=(8, 6)) -> Image.Image:
    return Image.new("RGB", size, color)


# ---- keys ----------------------------------------------------------------------------------
def test_key_is_deterministic_and_prefixed():
    k = item_key(FP, TextInput("hello"), prompt_role="query")
    assert k == item_key(FP, TextInput("hello"), prompt_role="query")
    assert k.startswith("mlxemb:c:") and len(k) == len("mlxemb:c:") + 64


@pytest.mark.parametrize(
    "other",
    [
        dict(fp="org/model@def456"),
        dict(item=TextInput("hello!")),
        dict(item=TokenInput((1, 2))),
        dict(role="document"),
        dict(options={"dimensions": 64}),
    ],
)
def test_key_changes_with_every_part(other):
    base = dict(fp=FP, item=TextInput("hello"), role="query", options={})
    a = item_key(base["fp"], base["item"], prompt_role=base["role"], options=base["options"])
    p = {**base, **other}
    b = item_key(p["fp"], p["item"], prompt_role=p["role"], options=p["options"])
    assert a != b


def test_key_options_canonical():
    a = item_key(FP, TextInput("x"), prompt_role="q", options={"a": 1, "b": 2})
    b = item_key(FP, TextInput("x"), prompt_role="q", options={"b": 2, "a": 1})
    c = item_key(FP, TextInput("x"), prompt_role="q", options={"a": 1, "b": 2, "dimensions": None})
    assert a == b == c


def test_key_no_ambiguity_between_fields():
    # Length-prefixed parts: moving bytes between role and content changes the key.
    a = item_key(FP, TextInput("b"), prompt_role="a")
    b = item_key(FP, TextInput(""), prompt_role="ab")
    assert a != b


def test_image_key_uses_content_hash_never_the_object():
    a = item_key(FP, ImageInput(_img(), content_hash="abc", meta={"url": "http://x"}),
                 prompt_role="document")  # fmt: skip
    b = item_key(FP, ImageInput(_img((1, 1, 1)), content_hash="abc", meta={"url": "http://y"}),
                 prompt_role="document")  # fmt: skip
    assert a == b  # the resolver's hash identifies the decoded media, the URL plays no part
    # Without a hash: the decoded pixels decide.
    c = item_key(FP, ImageInput(_img()), prompt_role="document")
    d = item_key(FP, ImageInput(_img()), prompt_role="document")
    e = item_key(FP, ImageInput(_img((11, 20, 30))), prompt_role="document")
    assert c == d != e


# ---- codec ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "vectors",
    [
        np.random.default_rng(0).standard_normal((7, 128), dtype=np.float32),
        np.random.default_rng(1).standard_normal(384, dtype=np.float32),
        np.array([[np.nan, np.inf, -0.0, 1e-45]], dtype=np.float32),
        np.random.default_rng(2).standard_normal((3, 4)).astype(np.float16),
        np.zeros((0, 128), dtype=np.float32),
    ],
)
def test_codec_roundtrip_is_bit_identical(vectors):
    emb = Embedding(vectors=vectors, n_tokens=123, extras={"image_tokens": 4, "name": "p"})
    blob = encode_embedding(emb)
    back = decode_embedding(blob)
    assert back.vectors.dtype == vectors.dtype and back.vectors.shape == vectors.shape
    assert back.vectors.tobytes() == vectors.tobytes()
    assert back.n_tokens == 123 and back.extras == emb.extras
    back.vectors[...] = 0  # a writable copy, not a view of the cached bytes
    # Compact: header + shape + extras + raw floats.
    assert len(blob) < vectors.nbytes + 80


def test_codec_rejects_garbage():
    with pytest.raises(ValueError):
        decode_embedding(b"NOPE" + bytes(40))
    blob = encode_embedding(Embedding(np.ones((2, 2), np.float32), 1))
    with pytest.raises(ValueError):
        decode_embedding(blob[:-1])


# ---- policy --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("header", "enabled", "read", "write"),
    [
        (None, True, True, True),
        ("max-age=0", True, True, True),
        ("no-cache", True, False, True),
        ("No-Cache, max-age=0", True, False, True),
        ("no-store", True, False, False),
        (None, False, False, False),
    ],
)
def test_cache_control(header, enabled, read, write):
    assert CachePolicy.from_request(header, enabled=enabled) == CachePolicy(read, write)


# ---- the cache in redis --------------------------------------------------------------------
def test_get_set_many_with_ttl_and_counters():
    server = fakeredis.FakeServer()
    sync = fakeredis.FakeRedis(server=server)

    async def run():
        cache = EmbeddingCache(lambda: fakeredis.FakeAsyncRedis(server=server), ttl=60)
        keys = [f"mlxemb:c:{i}" for i in range(4)]
        embs = {k: Embedding(np.full((2, 3), i, np.float32), i) for i, k in enumerate(keys[:2])}
        assert await cache.get_many(keys) == [None] * 4
        await cache.set_many(embs)
        got = await cache.get_many([keys[0], None, keys[2], keys[1]])
        assert got[1] is None and got[2] is None
        assert got[0].vectors.tobytes() == embs[keys[0]].vectors.tobytes()
        assert got[3].n_tokens == 1
        assert 0 < sync.ttl(keys[0]) <= 60
        await cache.flush_counters()
        return cache.stats

    stats = asyncio.run(run())
    assert (stats.hits, stats.misses, stats.writes) == (2, 5, 2)
    assert int(sync.get(STATS_HITS)) == 2 and int(sync.get(STATS_MISSES)) == 5


def test_zero_ttl_still_evictable():
    server = fakeredis.FakeServer()
    sync = fakeredis.FakeRedis(server=server)
    cache = SyncEmbeddingCache(sync, ttl=0)
    cache.set_many({"mlxemb:c:x": Embedding(np.ones(3, np.float32), 1)})
    assert sync.ttl("mlxemb:c:x") > NO_EXPIRY_TTL - 10  # volatile-lru only evicts keys with a TTL
    assert cache.get_many(["mlxemb:c:x", None])[0].vectors.tolist() == [1.0, 1.0, 1.0]


def test_unreachable_redis_is_skipped_logged_once_and_retried(caplog):
    server = fakeredis.FakeServer()
    server.connected = False
    calls = []

    def factory():
        calls.append(1)
        return fakeredis.FakeAsyncRedis(server=server)

    async def run():
        cache = EmbeddingCache(factory, ttl=60, retry_interval=0.05)
        emb = Embedding(np.ones(3, np.float32), 1)
        with caplog.at_level(logging.INFO, logger="app.cache"):
            for _ in range(5):
                assert await cache.get_many(["mlxemb:c:a"]) == [None]
                await cache.set_many({"mlxemb:c:a": emb})
            assert cache.stats.skipped >= 4
            server.connected = True
            await asyncio.sleep(0.06)
            await cache.set_many({"mlxemb:c:a": emb})
            assert (await cache.get_many(["mlxemb:c:a"]))[0] is not None
        return cache

    asyncio.run(run())
    warnings = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(warnings) == 1
    assert any("reachable again" in r.getMessage() for r in caplog.records)
