"""Cache and queued jobs against a real redis-server and real worker subprocesses.

The model-fidelity tests run the tiny ColQwen2.5 in the test process (inline) and in an
``mlx-embeddings-worker`` subprocess (queued). The fault tests use the sleep-bound fake-model
worker (``python -m workers.testing``) so that "mid-job" is a wide, deterministic window.
"""

from __future__ import annotations

import asyncio
import signal
import time

import numpy as np
import pytest
from PIL import Image

from app import dispatch, jobs
from app.cache import CachePolicy, EmbeddingCache
from app.engine.base import ImageInput, TextInput
from app.errors import JobFailed, QueueUnavailable
from app.job_items import JobItem
from app.settings import Settings

pytestmark = pytest.mark.slow


def _image(i: int, size=(224, 224)) -> ImageInput:
    rng = np.random.default_rng(1000 + i)
    pixels = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    return ImageInput(Image.fromarray(pixels, "RGB"), content_hash=f"img-{i}")


@pytest.fixture(scope="module")
def colqwen_engine(tiny_colqwen_path):
    from app.engine import load_engine

    engine = load_engine(Settings(model=str(tiny_colqwen_path)))
    engine.wait_ready(120)
    yield engine
    engine.close()


def _settings(model: str = "fake", **kw) -> Settings:
    return Settings(model=model, job_chunk_size=kw.pop("job_chunk_size", 4), **kw)


def test_queued_equals_inline_and_cache_serves_bit_identical_vectors(
    redis_handle, spawn_worker, workers_up, colqwen_engine, tiny_colqwen_path
):
    engine = colqwen_engine
    settings = _settings(str(tiny_colqwen_path), queue_threshold=8)
    spawn_worker(redis_handle.url, model=tiny_colqwen_path)
    workers_up(redis_handle, 1)
    images = [_image(i) for i in range(12)]

    async def go():
        cache = EmbeddingCache.from_settings(redis_handle, settings)
        store = jobs.JobStore(redis_handle, settings, engine.info.fingerprint)
        calls = engine.forward_calls
        queued = await dispatch.embed_inputs(images, engine=engine, settings=settings, cache=cache,
                                         jobs=store)  # fmt: skip
        assert queued.job_id is not None and queued.computed == 12
        assert engine.forward_calls == calls  # the worker process computed them
        inline = await dispatch.embed_inputs(images, engine=engine, settings=settings, cache=cache,
                                         policy=CachePolicy(read=False, write=False))  # fmt: skip
        assert inline.job_id is None and engine.forward_calls > calls
        calls = engine.forward_calls
        hit = await dispatch.embed_inputs(images, engine=engine, settings=settings, cache=cache,
                                      jobs=store)  # fmt: skip
        assert hit.cached == 12 and engine.forward_calls == calls  # no forward pass
        items_before = engine.items_computed
        extra = [_image(100), _image(101), TextInput("a query about page 3")]
        partial = await dispatch.embed_inputs(images + extra, engine=engine, settings=settings,
                                          cache=cache, jobs=store)  # fmt: skip
        assert (partial.cached, partial.computed) == (12, 3) and partial.job_id is None
        assert engine.items_computed - items_before == 3
        await store.close()
        await cache.close()
        return queued, inline, hit

    queued, inline, hit = asyncio.run(go())
    # The worker computes chunk by chunk; the same batches inline give the same bits. (A
    # different batch size may round differently in a multithreaded BLAS, hence the allclose.)
    size = settings.job_chunk_size
    prepared = [engine.prepare(x) for x in images]
    chunked = [e for k in range(0, 12, size) for e in engine.embed_blocking(prepared[k : k + size])]
    for q, c, i, h in zip(queued.embeddings, chunked, inline.embeddings, hit.embeddings,
                          strict=True):  # fmt: skip
        assert q.vectors.dtype == np.float32 and q.vectors.ndim == 2
        np.testing.assert_array_equal(q.vectors, c.vectors)  # element-wise, across processes
        np.testing.assert_allclose(q.vectors, i.vectors, rtol=0, atol=1e-5)
        assert h.vectors.tobytes() == q.vectors.tobytes()  # the cache hit is bit-identical
        assert q.n_tokens == i.n_tokens == h.n_tokens and q.extras == i.extras == h.extras


def test_job_submit_progress_result_delete(
    redis_handle, spawn_worker, workers_up, colqwen_engine, tiny_colqwen_path
):
    settings = _settings(str(tiny_colqwen_path), job_chunk_size=2)
    spawn_worker(redis_handle.url, model=tiny_colqwen_path)
    workers_up(redis_handle, 1)
    images = [_image(200 + i) for i in range(12)]

    async def go():
        store = jobs.JobStore(redis_handle, settings, colqwen_engine.info.fingerprint)
        st = await store.submit([JobItem(x) for x in images], {"encoding_format": "float"})
        seen = []
        deadline = time.monotonic() + 60
        while not st.finished and time.monotonic() < deadline:
            st = await store.status(st.id)
            if not seen or seen[-1] != st.completed:
                seen.append(st.completed)
            await asyncio.sleep(0.005)
        assert st.status == "succeeded", st.to_dict()
        assert seen[-1] == 12 and len(seen) >= 3, seen  # progress moved chunk by chunk
        assert seen == sorted(seen)
        result = await store.result(st.id)
        await store.delete(st.id)
        assert not redis_handle.sync_client().keys(f"mlxemb:job:{st.id}*")
        await store.close()
        return result

    result = asyncio.run(go())
    prepared = [colqwen_engine.prepare(x) for x in images]
    inline = [
        e for k in range(0, 12, 2) for e in colqwen_engine.embed_blocking(prepared[k : k + 2])
    ]
    for a, b in zip(result, inline, strict=True):
        np.testing.assert_array_equal(a.vectors, b.vectors)


def test_killed_worker_chunk_is_retried_by_another_worker(redis_handle, spawn_worker, workers_up):
    settings = _settings(job_chunk_size=4)
    doomed = spawn_worker(redis_handle.url, delay=30.0, name="doomed")
    workers_up(redis_handle, 1)

    async def go():
        store = jobs.JobStore(redis_handle, settings, "fake-model@v1", lease=2.0)
        await store.start()
        st = await store.submit([JobItem(TextInput(f"t{i}")) for i in range(4)], {})
        while (await store.status(st.id)).status != "running":
            await asyncio.sleep(0.02)
        doomed.send_signal(signal.SIGKILL)  # mid-chunk
        spawn_worker(redis_handle.url, delay=0.0, name="rescuer")
        start = time.monotonic()
        result = await store.wait(st.id, timeout=30)
        took = time.monotonic() - start
        await store.close()
        return result, took

    result, took = asyncio.run(go())
    assert len(result) == 4 and took < 25
    r = redis_handle.sync_client()
    assert not r.keys("mlxemb:job:*:in")  # job inputs are dropped once done


def test_killed_worker_without_a_replacement_fails_clearly(redis_handle, spawn_worker, workers_up):
    settings = _settings(job_chunk_size=4)
    doomed = spawn_worker(redis_handle.url, delay=30.0)
    workers_up(redis_handle, 1)

    async def go():
        store = jobs.JobStore(redis_handle, settings, "fake-model@v1", lease=1.5,
                              orphan_timeout=3.0, maintenance_interval=0.5)  # fmt: skip
        await store.start()
        st = await store.submit([JobItem(TextInput("x"))], {})
        while (await store.status(st.id)).status != "running":
            await asyncio.sleep(0.02)
        doomed.send_signal(signal.SIGKILL)
        start = time.monotonic()
        with pytest.raises(JobFailed) as info:
            await store.wait(st.id, timeout=30)
        took = time.monotonic() - start
        await store.close()
        return info.value, took

    err, took = asyncio.run(go())
    assert took < 15
    assert "no mlx-embeddings-worker serves queue" in err.message


def test_restart_on_same_data_dir_keeps_results_and_queued_jobs(
    redis_factory, spawn_worker, workers_up
):
    settings = _settings(job_chunk_size=4)
    first = redis_factory()

    async def submit(handle, n, wait=False):
        store = jobs.JobStore(handle, settings, "fake-model@v1")
        st = await store.submit([JobItem(TextInput(f"r{i}")) for i in range(n)], {"n": n})
        out = await store.wait(st.id, timeout=30) if wait else None
        await store.close()
        return st.id, out

    worker = spawn_worker(first.url)
    workers_up(first, 1)
    done_id, before = asyncio.run(submit(first, 6, wait=True))
    worker.terminate()  # warm shutdown
    worker.wait(10)
    queued_id, _ = asyncio.run(submit(first, 5))
    first.stop()

    second = redis_factory()

    async def after():
        store = jobs.JobStore(second, settings, "fake-model@v1")
        again = await store.result(done_id)
        st = await store.status(queued_id)
        assert st.status == "queued" and st.request_meta["n"] == 5
        spawn_worker(second.url)
        late = await store.wait(queued_id, timeout=30)
        await store.close()
        return again, late

    again, late = asyncio.run(after())
    for a, b in zip(before, again, strict=True):
        assert a.vectors.tobytes() == b.vectors.tobytes()
    assert len(late) == 5


def test_redis_stopped_cache_is_skipped_and_jobs_are_503(redis_factory, colqwen_engine,
                                                         tiny_colqwen_path):  # fmt: skip
    handle = redis_factory()
    settings = _settings(str(tiny_colqwen_path), queue_threshold=2)
    images = [_image(300 + i, size=(64, 64)) for i in range(4)]

    async def go():
        cache = EmbeddingCache.from_settings(handle, settings)
        store = jobs.JobStore(handle, settings, colqwen_engine.info.fingerprint)
        await cache.set_many({})
        handle.stop()
        out = await dispatch.embed_inputs(images, engine=colqwen_engine, settings=settings,
                                      cache=cache, jobs=store)  # fmt: skip
        assert out.computed == 4 and out.job_id is None  # computed inline, request succeeded
        assert cache.stats.skipped == 4
        with pytest.raises(QueueUnavailable) as info:
            await store.submit([JobItem(x) for x in images], {})
        assert info.value.headers["Retry-After"] == "5"
        with pytest.raises(QueueUnavailable):
            await store.status("embjob_whatever")
        await store.close()
        await cache.close()

    asyncio.run(go())
