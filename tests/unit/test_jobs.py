"""Job dispatch, items, state machine, watchdog and the local worker — on fakeredis."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import orjson
import pytest
from PIL import Image
from rq import Queue

from app import dispatch, jobs
from app.cache import EmbeddingCache, item_key
from app.engine.base import ImageInput, Prepared, TextInput, TokenInput
from app.errors import (
    InvalidRequest,
    JobFailed,
    JobNotFinished,
    JobNotFound,
    JobTimeout,
    QueueUnavailable,
)
from app.job_items import JobItem, decode_items, encode_items
from app.redis_embedded import RedisHandle, start_fakeredis
from app.settings import Settings
from workers import runtime
from workers.local import LocalWorker
from workers.testing import BAD_TEXT, fake_engine


def _settings(**kw) -> Settings:
    return Settings(model="fake", job_chunk_size=kw.pop("job_chunk_size", 4), **kw)


def _image(i: int) -> ImageInput:
    rng = np.random.default_rng(i)
    img = Image.fromarray(rng.integers(0, 255, (12, 10, 3), dtype=np.uint8), "RGB")
    return ImageInput(img, content_hash=f"hash-{i}", meta={"page": i})


@pytest.fixture
def handle() -> RedisHandle:
    return start_fakeredis()


@pytest.fixture
def engine():
    eng = fake_engine()
    yield eng
    eng.close()
    runtime.clear()


@pytest.fixture
def worker(handle, engine):
    w = LocalWorker(handle, _settings(), engine).start()
    yield w
    w.stop(timeout=0)  # the idle thread ends on its own within a second


def run(coro):
    return asyncio.run(coro)


# ---- dispatch ------------------------------------------------------------------------------
def _prep(kind: str, pixels: int = 100) -> Prepared:
    return Prepared(n_tokens=1, payload=None, kind=kind, pixels=pixels if kind == "image" else 0)


def test_should_queue_threshold_and_pixel_budget():
    s = _settings(queue_threshold=8, queue_pixel_budget=10_000)
    assert not jobs.should_queue([_prep("image")] * 8 + [_prep("text")] * 50, s)
    assert jobs.should_queue([_prep("image")] * 9, s)
    assert jobs.should_queue([_prep("image", 6000), _prep("image", 6000)], s)
    assert not jobs.should_queue([_prep("image", 5000), _prep("image", 5000)], s)
    assert not jobs.should_queue([], s)


# ---- items ---------------------------------------------------------------------------------
def test_job_items_roundtrip_pixel_exact():
    img = _image(3)
    rgba = ImageInput(Image.new("RGBA", (4, 4), (1, 2, 3, 128)), content_hash="h")
    items = [
        JobItem(TextInput("héllo"), "k1", 0),
        JobItem(TokenInput((5, 6, 7)), None, 1),
        JobItem(img, "k3", 2),
        JobItem(rgba, None, 3),
    ]
    back = decode_items(encode_items(items))
    assert back[0] == items[0] and back[1] == items[1]
    assert back[2].input.image.tobytes() == img.image.tobytes()
    assert back[2].input.content_hash == "hash-3" and back[2].input.meta == {"page": 3}
    assert back[2].cache_key == "k3" and back[2].index == 2
    assert back[3].input.image.mode == "RGB"


# ---- the job lifecycle ---------------------------------------------------------------------
def test_submit_progress_result_delete(handle, engine, worker):
    settings = _settings()
    inputs = [_image(i) for i in range(10)]

    async def go():
        store = jobs.JobStore(handle, settings, engine.info.fingerprint)
        st = await store.submit([JobItem(x, None, i) for i, x in enumerate(inputs)], {"a": 1})
        assert st.id.startswith("embjob_") and len(st.id) > 30
        d = st.to_dict()
        assert d["object"] == "embedding.job" and d["progress"]["total"] == 10
        assert d["status"] in ("queued", "running", "succeeded") and d["error"] is None
        got = await store.wait(st.id, timeout=10)
        st = await store.status(st.id)
        assert st.status == "succeeded" and st.completed == 10 and st.request_meta["a"] == 1
        assert (await store.result(st.id))[3].vectors.tobytes() == got[3].vectors.tobytes()
        await store.delete(st.id)
        with pytest.raises(JobNotFound):
            await store.status(st.id)
        with pytest.raises(JobNotFound):
            await store.delete(st.id)
        await store.close()
        return got

    got = run(go())
    inline = engine.embed_blocking([engine.prepare(x) for x in inputs])
    for a, b in zip(got, inline, strict=True):
        assert a.vectors.tobytes() == b.vectors.tobytes() and a.n_tokens == b.n_tokens
        assert a.extras == b.extras
    sync = handle.sync_client()
    assert not sync.keys("mlxemb:job:*")


def test_chunks_are_separate_rq_jobs(handle, engine):
    settings = _settings(job_chunk_size=4)

    async def go():
        store = jobs.JobStore(handle, settings, "fp")
        st = await store.submit([JobItem(TextInput(str(i))) for i in range(10)], {})
        q = Queue(settings.queue_name, connection=handle.sync_client())
        assert sorted(q.job_ids) == sorted(jobs.rq_job_id(st.id, k, 1) for k in range(3))
        with pytest.raises(JobNotFinished):
            await store.result(st.id)
        # Chunks move progress one at a time.
        LocalWorker(handle, settings, engine)  # registry only
        runtime.set_engine(engine, settings)
        r = handle.sync_client()
        task = jobs.start_chunk(r, st.id, 1, 1, "w")
        assert (await store.status(st.id)).status == "running"
        outs = [b"x"] * 4
        assert not jobs.finish_chunk(r, st.id, 1, task.offset, outs)
        assert (await store.status(st.id)).completed == 4
        assert not jobs.finish_chunk(r, st.id, 1, task.offset, outs)  # counted once
        assert (await store.status(st.id)).completed == 4
        await store.close()

    run(go())


def test_failing_item_fails_the_job_with_its_error(handle, engine, worker):
    async def go():
        store = jobs.JobStore(handle, _settings(), engine.info.fingerprint)
        items = [JobItem(TextInput("fine"), None, 0), JobItem(TextInput(BAD_TEXT), None, 7)]
        st = await store.submit(items, {})
        with pytest.raises(JobFailed) as info:
            await store.wait(st.id, timeout=10)
        assert isinstance(info.value.cause, InvalidRequest)
        assert info.value.cause.param == "input[7]"
        st = await store.status(st.id)
        assert st.status == "failed" and st.to_dict()["error"]["param"] == "input[7]"
        with pytest.raises(JobFailed):
            await store.result(st.id)
        await store.close()

    run(go())


def test_cancel_stops_queued_chunks(handle, engine):
    settings = _settings()

    async def go():
        store = jobs.JobStore(handle, settings, "fp")
        st = await store.submit([JobItem(TextInput(str(i))) for i in range(8)], {})
        st = await store.cancel(st.id)
        assert st.status == "cancelled"
        q = Queue(settings.queue_name, connection=handle.sync_client())
        assert q.count == 0
        # A chunk that was already dequeued sees the flag and does nothing.
        assert jobs.start_chunk(handle.sync_client(), st.id, 0, 1, "w") is None
        with pytest.raises(JobFailed, match="cancelled"):
            await store.wait(st.id, timeout=1)
        await store.close()

    run(go())


def test_wait_times_out_without_blocking_the_loop(handle):
    async def go():
        store = jobs.JobStore(handle, _settings(), "fp", poll_interval=0.05)
        st = await store.submit([JobItem(TextInput("x"))], {})
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        t = asyncio.create_task(ticker())
        start = time.monotonic()
        with pytest.raises(JobTimeout):
            await store.wait(st.id, timeout=0.3)
        assert time.monotonic() - start < 1.5
        t.cancel()
        assert ticks > 10
        await store.close()

    run(go())


def test_unknown_ids_are_404(handle):
    async def go():
        store = jobs.JobStore(handle, _settings(), "fp")
        for bad in ("embjob_nope", "../../etc", ""):
            with pytest.raises(JobNotFound):
                await store.status(bad)
        await store.close()

    run(go())


def test_unreachable_redis_is_503_with_retry_after():
    dead = RedisHandle(kind="external", url="redis://127.0.0.1:1/0")

    async def go():
        store = jobs.JobStore(dead, _settings(), "fp")
        with pytest.raises(QueueUnavailable) as info:
            await store.submit([JobItem(TextInput("x"))], {})
        assert info.value.status == 503 and info.value.headers == {"Retry-After": "5"}
        with pytest.raises(QueueUnavailable):
            await store.status("embjob_x")
        await store.close()

    run(go())


# ---- faults --------------------------------------------------------------------------------
def test_watchdog_retries_a_silent_chunk_then_gives_up(handle):
    settings = _settings()
    r = handle.sync_client()

    async def submit():
        store = jobs.JobStore(handle, settings, "fp", lease=2.0)
        st = await store.submit([JobItem(TextInput("a")), JobItem(TextInput("b"))], {})
        await store.close()
        return st.id

    job_id = run(submit())
    q = Queue(settings.queue_name, connection=r)
    for attempt in (1, 2, 3):
        assert jobs.start_chunk(r, job_id, 0, attempt, f"doomed-{attempt}") is not None
        jobs.worker_beat(r, "someone", settings.queue_name, "fake")  # a live worker exists
        jobs.watchdog(r, now=time.time() + 1)  # within the lease: nothing happens
        assert orjson.loads(r.hget(jobs.job_key(job_id, "chunks"), "0"))["s"] == "running"
        jobs.watchdog(r, now=time.time() + 5)
        if attempt < 3:
            st = orjson.loads(r.hget(jobs.job_key(job_id, "chunks"), "0"))
            assert st == {"a": attempt + 1, "s": "queued"}
            assert jobs.rq_job_id(job_id, 0, attempt + 1) in q.job_ids
            # The superseded attempt, if RQ ever runs it again, does nothing.
            assert jobs.start_chunk(r, job_id, 0, attempt, "late") is None
    h = r.hgetall(jobs.job_key(job_id))
    assert h[b"status"] == b"failed"
    msg = orjson.loads(h[b"error"])["error"]["message"]
    assert "stopped responding" in msg and "3 attempts" in msg


def test_watchdog_fails_orphaned_jobs_and_finishes_stuck_ones(handle):
    settings = _settings()
    r = handle.sync_client()

    async def submit(n):
        store = jobs.JobStore(handle, settings, "fp")
        st = await store.submit([JobItem(TextInput(str(i))) for i in range(n)], {})
        await store.close()
        return st.id

    orphan = run(submit(1))
    jobs.watchdog(r, orphan_timeout=60, now=time.time() + 30)
    assert r.hget(jobs.job_key(orphan), "status") == b"queued"
    jobs.watchdog(r, orphan_timeout=60, now=time.time() + 61)
    assert r.hget(jobs.job_key(orphan), "status") == b"failed"
    assert b"no mlx-embeddings-worker" in r.hget(jobs.job_key(orphan), "error")

    stuck = run(submit(1))
    r.hset(jobs.job_key(stuck), mapping={"chunks_done": 1, "status": "running"})
    jobs.watchdog(r)
    assert r.hget(jobs.job_key(stuck), "status") == b"succeeded"


def test_sweep_deletes_expired_jobs_only(handle):
    settings = _settings(job_ttl=100)
    r = handle.sync_client()

    async def submit():
        store = jobs.JobStore(handle, settings, "fp")
        st = await store.submit([JobItem(TextInput("x"))], {})
        await store.close()
        return st.id

    job_id = run(submit())
    assert jobs.sweep(r, now=time.time() + 50) == 0
    assert r.exists(jobs.job_key(job_id))
    assert jobs.sweep(r, now=time.time() + 101) == 1
    assert not r.keys(f"mlxemb:job:{job_id}*") and not r.sismember(jobs.ACTIVE_KEY, job_id)


# ---- the dispatcher with jobs --------------------------------------------------------------
def test_many_images_go_through_a_job_and_fill_the_cache(handle, engine, worker):
    settings = _settings(queue_threshold=8)
    inputs = [_image(i) for i in range(12)]

    async def go():
        cache = EmbeddingCache.from_settings(handle, settings)
        store = jobs.JobStore(handle, settings, engine.info.fingerprint)
        queued = await dispatch.embed_inputs(inputs, engine=engine, settings=settings,
                                         cache=cache, jobs=store)  # fmt: skip
        assert queued.job_id is not None and queued.computed == 12
        calls = engine.forward_calls
        again = await dispatch.embed_inputs(inputs, engine=engine, settings=settings,
                                        cache=cache, jobs=store)  # fmt: skip
        assert again.cached == 12 and again.job_id is None and engine.forward_calls == calls
        few = await dispatch.embed_inputs(inputs[:3] + [_image(99)], engine=engine,
                                      settings=settings, cache=cache, jobs=store)  # fmt: skip
        assert few.job_id is None and (few.cached, few.computed) == (3, 1)
        await store.close()
        await cache.close()
        return queued, again

    queued, again = run(go())
    inline = engine.embed_blocking([engine.prepare(x) for x in inputs])
    for q, a, b in zip(queued.embeddings, again.embeddings, inline, strict=True):
        assert q.vectors.tobytes() == b.vectors.tobytes() == a.vectors.tobytes()
    key = item_key(engine.info.fingerprint, inputs[0], prompt_role="document",
                   options={"truncate": False})  # fmt: skip
    assert handle.sync_client().ttl(key) > 0


def test_worker_with_another_model_fails_the_job_clearly(handle, engine, worker):
    async def go():
        store = jobs.JobStore(handle, _settings(), "some-other-model@v2")
        st = await store.submit([JobItem(TextInput("x"))], {})
        with pytest.raises(JobFailed, match="worker model mismatch"):
            await store.wait(st.id, timeout=10)
        await store.close()

    run(go())


def test_local_worker_stops_within_a_second(handle, engine):
    w = LocalWorker(handle, _settings(), engine).start()
    time.sleep(0.2)
    start = time.monotonic()
    w.stop()
    assert time.monotonic() - start < 1.6 and not w.alive
    assert not handle.sync_client().hgetall(jobs.WORKERS_KEY)
