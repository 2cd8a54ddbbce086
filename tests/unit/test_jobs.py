"""Jobs on RQ's machinery (store, chunks as an RQ group, the worker, the client) on fakeredis
with the in-process worker and the FakeAdapter. Faults with real processes: tests/integration."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import time

import numpy as np
import pytest
from fake_adapter import FakeAdapter, fake_engine
from PIL import Image
from rq import Queue
from rq.group import Group

from app.engine.base import ImageInput, TextInput, TokenInput
from app.errors import (
    InputTooLong,
    JobCancelled,
    JobFailed,
    JobNotFinished,
    JobNotFound,
    JobTimeout,
    QueueUnavailable,
)
from app.jobs import chunks, store
from app.jobs.client import JobClient
from app.jobs.items import JobItem
from app.jobs.worker import LocalWorker, live_workers
from app.redis_embedded import RedisHandle, start_fakeredis
from app.settings import Settings

SETTINGS = Settings(model="fake", job_chunk_size=4, orphan_timeout=60.0)


def _image(i: int) -> ImageInput:
    rng = np.random.default_rng(i)
    img = Image.fromarray(rng.integers(0, 255, (12, 10, 3), dtype=np.uint8), "RGB")
    return ImageInput(img, content_hash=f"hash-{i}", meta={"page": i})


def _items(inputs) -> list[JobItem]:
    return [JobItem.of(x, None, f"input[{i}]") for i, x in enumerate(inputs)]


@pytest.fixture
def handle() -> RedisHandle:
    return start_fakeredis()


@pytest.fixture
def engine():
    eng = fake_engine(FakeAdapter(max_tokens=8), max_wait_ms=0)
    eng.wait_ready(10)
    yield eng
    eng.close()


def _client(handle, engine, settings: Settings = SETTINGS) -> JobClient:
    return JobClient(handle, settings, engine.info.fingerprint)


@pytest.fixture
def worker(handle, engine):
    w = asyncio.run(LocalWorker({_client(handle, engine).queue: engine}, handle, SETTINGS).start())
    yield w
    w.stop(timeout=0)  # the idle thread ends on its own within a second


# ---- items ---------------------------------------------------------------------------------
def test_items_ship_the_source_bytes_and_decode_to_the_same_pixels():
    buf = io.BytesIO()
    Image.fromarray(np.arange(300, dtype=np.uint8).reshape(10, 10, 3)).save(buf, "JPEG")
    src = buf.getvalue()
    from app.media.images import decode_image

    decoded = decode_image(src, "jpeg", max_pixels=10**6, param="input[0]")
    jpeg = ImageInput(decoded, "h1", {"format": "jpeg"}, source=src)
    page = ImageInput(Image.new("RGBA", (4, 4), (1, 2, 3, 128)), "h2", {"page": 2})
    items = [JobItem.of(TextInput("héllo", "query"), "k1", "input[0]"),
             JobItem.of(TokenInput((5, 6, 7), "document"), None, "input[1]"),
             JobItem.of(jpeg, "k3", "input[2]"), JobItem.of(page, None, "input[3]")]  # fmt: skip
    assert items[2].value is src  # the original JPEG bytes, not a re-encoding
    back = [it.to_input() for it in items]
    assert back[0] == TextInput("héllo", "query") and back[1] == TokenInput((5, 6, 7), "document")
    assert back[2].image.tobytes() == decoded.tobytes() and back[2].content_hash == "h1"
    assert back[3].image.mode == "RGB" and back[3].meta == {"page": 2}
    assert back[3].image.tobytes() == page.image.convert("RGB").tobytes()


# ---- the job lifecycle ---------------------------------------------------------------------
def test_submit_progress_result_delete(handle, engine, worker):
    inputs = [_image(i) for i in range(10)]

    async def go():
        jobs = _client(handle, engine)
        st = await jobs.submit(_items(inputs), {"a": 1})
        assert st.id.startswith("embjob_") and len(st.id) > 30
        d = st.to_dict()
        assert d["object"] == "embedding.job" and d["progress"]["total"] == 10
        assert d["status"] in ("queued", "running", "succeeded") and d["error"] is None
        got = await jobs.wait(st.id, timeout=10)
        st = await jobs.status(st.id)
        assert st.status == "succeeded" and st.completed == 10 and st.meta["a"] == 1
        assert (await jobs.result(st.id))[3].vectors.tobytes() == got[3].vectors.tobytes()
        await jobs.delete(st.id)
        with pytest.raises(JobNotFound):
            await jobs.status(st.id)
        await jobs.close()
        return got

    got = asyncio.run(go())
    inline = engine.embed_blocking([engine.prepare(x) for x in inputs])
    for a, b in zip(got, inline, strict=True):
        assert a.vectors.tobytes() == b.vectors.tobytes() and a.n_tokens == b.n_tokens
        assert a.extras == b.extras
    assert not handle.sync_client().keys("mlxemb:job:*")


def test_chunks_are_one_rq_group_with_one_retry_policy(handle, engine):
    jobs = _client(handle, engine)
    st = asyncio.run(jobs.submit(_items([TextInput(f"t{i}") for i in range(10)]), {}))
    r = handle.sync_client()
    group = Group(r, name=st.id).get_jobs()
    assert sorted(j.args[1] for j in group) == [0, 4, 8]  # chunk start offsets
    assert all(j.retries_left == chunks.CHUNK_RETRIES for j in group)
    assert all(j.failure_callback is chunks.chunk_failed for j in group)
    assert Queue(jobs.queue, connection=r).count == 3
    assert jobs.queue.startswith("mlx-embeddings:")


def test_a_bad_item_fails_the_job_with_its_own_error_at_once(handle, engine, worker):
    items = _items([TextInput("ok"), TextInput("one two three four five six seven eight nine")])

    async def go():
        jobs = _client(handle, engine)
        st = await jobs.submit(items, {})
        with pytest.raises(InputTooLong) as info:  # the item's own 400, rebuilt
            await jobs.wait(st.id, timeout=10)
        assert info.value.param == "input[1]"
        st = await jobs.status(st.id)
        assert st.status == "failed" and st.to_dict()["error"]["code"] == "context_length_exceeded"
        with pytest.raises(JobFailed):
            await jobs.result(st.id)

    asyncio.run(go())


def test_cancel_drops_queued_chunks_and_result_is_409(handle, engine):
    async def go():
        jobs = _client(handle, engine)
        st = await jobs.submit(_items([TextInput(f"t{i}") for i in range(12)]), {})
        st = await jobs.cancel(st.id)
        assert st.status == "cancelled"
        assert Queue(jobs.queue, connection=jobs.sync).count == 0
        with pytest.raises(JobCancelled):
            await jobs.result(st.id)
        with pytest.raises(JobCancelled):
            await jobs.wait(st.id, timeout=1)

    asyncio.run(go())


def test_wait_times_out_without_blocking_the_loop(handle, engine):
    async def go():
        jobs = _client(handle, engine)
        st = await jobs.submit(_items([TextInput("x")]), {})
        waiter = asyncio.create_task(jobs.wait(st.id, timeout=1.0))
        for _ in range(5):  # the loop stays free while the wait goes on (no worker runs it)
            await asyncio.sleep(0.01)
            assert not waiter.done()
        with pytest.raises(JobTimeout):
            await waiter
        with pytest.raises(JobNotFinished):
            await jobs.result(st.id)

    asyncio.run(go())


def test_unknown_ids_are_404(handle, engine):
    async def go():
        jobs = _client(handle, engine)
        for bad in ("embjob_nope", "../etc", "x" * 500):
            with pytest.raises(JobNotFound):
                await jobs.status(bad)

    asyncio.run(go())


def test_a_job_is_404_to_another_owner_and_untouched_by_it(handle, engine, worker):
    async def go():
        jobs = _client(handle, engine)
        st = await jobs.submit(_items([TextInput(f"t{i}") for i in range(6)]), {}, owner="A")
        assert handle.sync_client().hget(store.job_key(st.id), "owner") == b"A"
        for call in (
            lambda: jobs.status(st.id, "B"),
            lambda: jobs.result(st.id, owner="B"),
            lambda: jobs.cancel(st.id, "B"),
            lambda: jobs.delete(st.id, "B"),
            lambda: jobs.status(st.id, ""),  # the anonymous owner is another owner too
        ):
            with pytest.raises(JobNotFound) as info:
                await call()
            assert "unknown, deleted or expired" in info.value.message  # same as an unknown id
        await jobs.wait(st.id, timeout=10)
        st = await jobs.status(st.id, "A")
        assert st.status == "succeeded" and st.owner == "A"  # B's DELETE did not cancel it
        assert len(await jobs.result(st.id, owner="A")) == 6
        await jobs.delete(st.id, "A")
        with pytest.raises(JobNotFound):
            await jobs.status(st.id, "A")

    asyncio.run(go())


def test_unreachable_redis_is_503_with_retry_after(engine):
    dead = RedisHandle(kind="external", url="redis://127.0.0.1:1/0")

    async def go():
        jobs = _client(dead, engine)
        with pytest.raises(QueueUnavailable) as info:
            await jobs.submit(_items([TextInput("x")]), {})
        assert info.value.headers["Retry-After"]
        with pytest.raises(QueueUnavailable):
            await jobs.status("embjob_x")

    asyncio.run(go())


def test_job_with_no_live_worker_fails_clearly_after_the_orphan_timeout(handle, engine):
    settings = dataclasses.replace(SETTINGS, orphan_timeout=0.3)

    async def go():
        jobs = _client(handle, engine, settings)
        st = await jobs.submit(_items([TextInput("x")]), {})
        await asyncio.sleep(0.4)
        st = await jobs.status(st.id)
        assert st.status == "failed"
        assert "no live mlx-embeddings-worker serves this model" in st.error["error"]["message"]

    asyncio.run(go())


def test_a_worker_for_other_model_settings_never_takes_the_job(handle, engine):
    """Its queue is another one; the job fails only because no matching worker exists, and
    the message names the mismatched worker."""
    other = fake_engine(FakeAdapter(max_tokens=8, dim=4), max_wait_ms=0)  # another fingerprint
    other.wait_ready(10)
    settings = dataclasses.replace(SETTINGS, orphan_timeout=0.5)
    queue = JobClient(handle, settings, other.info.fingerprint).queue
    w = asyncio.run(LocalWorker({queue: other}, handle, settings).start())
    try:

        async def go():
            jobs = _client(handle, engine, settings)
            st = await jobs.submit(_items([TextInput("x")]), {})
            await asyncio.sleep(0.7)
            st = await jobs.status(st.id)
            assert st.status == "failed"
            msg = st.error["error"]["message"]
            assert "serve other model settings" in msg and w.worker.name in msg

        asyncio.run(go())
        assert other.forward_calls == 0
    finally:
        w.stop(timeout=0)
        other.close()


def test_a_finished_job_past_its_ttl_is_gone(handle, engine, worker):
    settings = dataclasses.replace(SETTINGS, job_ttl=1)

    async def go():
        jobs = _client(handle, engine, settings)
        st = await jobs.submit(_items([TextInput("a")]), {})
        await jobs.wait(st.id, timeout=10)
        await asyncio.sleep(1.1)
        with pytest.raises(JobNotFound):
            await jobs.status(st.id)
        assert not jobs.sync.exists(store.job_key(st.id))

    asyncio.run(go())


def test_sweep_deletes_expired_jobs_only(handle, engine):
    r = handle.sync_client()
    store.create(r, "embjob_old", total=1, model="m", queue="q", ttl=0, meta={})
    store.create(r, "embjob_new", total=1, model="m", queue="q", ttl=3600, meta={})
    assert store.sweep(r, now=time.time() + 1) == ["embjob_old"]
    assert not r.exists(store.job_key("embjob_old")) and r.exists(store.job_key("embjob_new"))


def test_job_data_has_no_ttl_so_eviction_never_drops_it(handle, engine, worker):
    async def go():
        jobs = _client(handle, engine)
        st = await jobs.submit(_items([TextInput("a"), TextInput("b")]), {})
        await jobs.wait(st.id, timeout=10)
        return st.id

    job_id = asyncio.run(go())
    r = handle.sync_client()
    assert r.ttl(store.job_key(job_id)) == -1 and r.ttl(store.job_key(job_id, "out")) == -1


def test_live_workers_is_rqs_registry_and_a_stopped_worker_leaves_it(handle, engine):
    q = _client(handle, engine).queue
    w = asyncio.run(LocalWorker({q: engine}, handle, SETTINGS).start())
    r = handle.sync_client()
    assert [x.name for x in live_workers(r, q, 10)] == [w.worker.name]
    t0 = time.monotonic()
    w.stop()
    assert time.monotonic() - t0 < 1.6 and not w.alive
    assert live_workers(r, q, 10) == []


def test_a_worker_of_two_models_takes_their_queues_in_turn(handle, engine):
    """One worker on two models' queues: a 1-chunk job of the second model queued behind a
    10-chunk job of the first runs before the first job's chunks are all done (RQ's
    round-robin dequeue, not its default that drains the first queue first)."""
    other = fake_engine(FakeAdapter(max_tokens=8, dim=4), max_wait_ms=0)
    other.wait_ready(10)
    settings = dataclasses.replace(SETTINGS, job_chunk_size=1)
    first, second = _client(handle, engine, settings), _client(handle, other, settings)

    async def go():
        big = await first.submit(_items([TextInput(f"a{i}") for i in range(10)]), {})
        small = await second.submit(_items([TextInput("b")]), {})
        w = await LocalWorker({first.queue: engine, second.queue: other}, handle, settings).start()
        try:
            await second.wait(small.id, timeout=10)
            done_first = (await first.status(big.id)).completed
            await first.wait(big.id, timeout=10)
        finally:
            w.stop(timeout=0)
        return done_first

    try:
        assert asyncio.run(go()) < 10
        assert other.forward_calls == 1
    finally:
        other.close()
