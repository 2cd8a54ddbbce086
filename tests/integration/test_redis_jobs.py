"""Jobs against a real redis-server and real worker subprocesses, failover included.

The model-fidelity tests run the tiny ColQwen2.5 in the test process (inline) and in an
``mlx-embeddings-worker`` subprocess (queued). The fault tests use the sleep-bound fake-model
worker (``tests/fake_worker.py``) so that "mid-chunk" is a wide, deterministic window, and
kill it with SIGKILL: failover runs on RQ's own machinery (StartedJobRegistry cleanup, retries,
the failure callback).
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time

import numpy as np
import pytest
from fake_adapter import FakeAdapter
from PIL import Image
from rq import Queue
from rq.registry import FailedJobRegistry, StartedJobRegistry

from app.cache import CachePolicy, EmbeddingCache
from app.engine.base import ImageInput, TextInput
from app.errors import QueueUnavailable
from app.jobs.client import JobClient
from app.jobs.items import JobItem
from app.pipeline import Pipeline
from app.settings import Settings

pytestmark = pytest.mark.slow

FAKE_FP = FakeAdapter(max_tokens=512).info.fingerprint
# The largest difference between a vector computed in a chunk of 4 (a worker) and in one
# batch of 12 (inline), measured on the tiny ColQwen2.5: batch composition changes the
# padding and so the float32 summation order in the multithreaded BLAS.
JOB_VS_INLINE_ATOL = 5e-5


def _image(i: int, size=(224, 224)) -> ImageInput:
    rng = np.random.default_rng(1000 + i)
    pixels = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    return ImageInput(Image.fromarray(pixels, "RGB"), content_hash=f"img-{i}")


def _items(inputs) -> list[JobItem]:
    return [JobItem.of(x, None, f"input[{i}]") for i, x in enumerate(inputs)]


@pytest.fixture(scope="module")
def colqwen_engine(tiny_colqwen_path):
    from app.engine import load_engine

    engine = load_engine(Settings(model=str(tiny_colqwen_path)))
    engine.wait_ready(120)
    yield engine
    engine.close()


def _settings(model: str = "fake", **kw) -> Settings:
    return Settings(model=model, job_chunk_size=kw.pop("job_chunk_size", 4), **kw)


def _running_on(handle, queue: str) -> list[str]:
    """Worker names of the chunks RQ has in its StartedJobRegistry now."""
    from rq.job import Job

    r = handle.sync_client()
    # a raw read: RQ's get_job_ids() would run an (unlocked) registry cleanup from this process
    # beside the workers' own, and two cleanups can retry one abandoned chunk twice
    entries = r.zrange(StartedJobRegistry(queue, connection=r).key, 0, -1)
    ids = [e.decode().split(":")[0] for e in entries]
    return [j.worker_name for j in Job.fetch_many(ids, connection=r) if j is not None]


def test_queued_equals_inline_and_the_cache_serves_bit_identical_vectors(
    redis_handle, spawn_worker, workers_up, colqwen_engine, tiny_colqwen_path
):
    engine = colqwen_engine
    settings = _settings(str(tiny_colqwen_path))
    spawn_worker(redis_handle.url, model=tiny_colqwen_path)
    workers_up(redis_handle, 1)
    images = [_image(i) for i in range(12)]

    async def go():
        cache = EmbeddingCache.from_settings(redis_handle, settings)
        pipe = Pipeline(engine, cache)
        jobs = JobClient(redis_handle, settings, engine.info.fingerprint)
        keys = pipe.keys(images, CachePolicy(), truncate=False)
        items = [
            JobItem.of(x, k, f"input[{i}]")
            for i, (x, k) in enumerate(zip(images, keys, strict=True))
        ]
        calls = engine.forward_calls
        st = await jobs.submit(items, {"cache_read": False})
        queued = await jobs.wait(st.id, timeout=120)
        assert engine.forward_calls == calls  # the worker process computed them
        params = [f"input[{i}]" for i in range(12)]
        inline = await pipe.compute(images, params, [None] * 12, CachePolicy(), truncate=False)
        calls = engine.forward_calls
        hit = await pipe.run(images, params, keys, CachePolicy(), truncate=False)
        assert engine.forward_calls == calls  # the worker filled the cache: no forward pass
        await jobs.close()
        await cache.close()
        return queued, inline, hit

    queued, inline, hit = asyncio.run(go())
    size = settings.job_chunk_size
    prepared = [engine.prepare(x) for x in images]
    chunked = [e for k in range(0, 12, size) for e in engine.embed_blocking(prepared[k : k + size])]
    worst = 0.0
    for q, c, i, h in zip(queued, chunked, inline, hit, strict=True):
        assert q.vectors.dtype == np.float32 and q.vectors.ndim == 2
        np.testing.assert_array_equal(q.vectors, c.vectors)  # same batches: same bits
        worst = max(worst, float(np.abs(q.vectors - i.vectors).max()))
        assert h.vectors.tobytes() == q.vectors.tobytes()  # the cache hit is bit-identical
        assert q.n_tokens == i.n_tokens == h.n_tokens and q.extras == i.extras == h.extras
    assert worst <= JOB_VS_INLINE_ATOL, worst


def test_progress_moves_chunk_by_chunk_and_delete_leaves_nothing(
    redis_handle, spawn_worker, workers_up, colqwen_engine, tiny_colqwen_path
):
    settings = _settings(str(tiny_colqwen_path), job_chunk_size=2)
    spawn_worker(redis_handle.url, model=tiny_colqwen_path)
    workers_up(redis_handle, 1)
    images = [_image(200 + i) for i in range(12)]

    async def go():
        jobs = JobClient(redis_handle, settings, colqwen_engine.info.fingerprint)
        st = await jobs.submit(_items(images), {"encoding_format": "float"})
        seen = []
        deadline = time.monotonic() + 60
        while not st.finished and time.monotonic() < deadline:
            st = await jobs.status(st.id)
            if not seen or seen[-1] != st.completed:
                seen.append(st.completed)
            await asyncio.sleep(0.005)
        assert st.status == "succeeded", st.to_dict()
        assert seen[-1] == 12 and len(seen) >= 3 and seen == sorted(seen), seen
        result = await jobs.result(st.id)
        await jobs.delete(st.id)
        assert not redis_handle.sync_client().keys(f"mlxemb:job:{st.id}*")
        await jobs.close()
        return result

    result = asyncio.run(go())
    prepared = [colqwen_engine.prepare(x) for x in images]
    inline = [
        e for k in range(0, 12, 2) for e in colqwen_engine.embed_blocking(prepared[k : k + 2])
    ]
    for a, b in zip(result, inline, strict=True):
        np.testing.assert_array_equal(a.vectors, b.vectors)


def _wait_running(handle, jobs: JobClient, job_id: str, worker: str, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while worker not in _running_on(handle, jobs.queue):
        assert time.monotonic() < deadline, f"{worker} never started the chunk"
        time.sleep(0.05)


def test_worker_killed_mid_chunk_is_replaced_by_another_within_15_s(
    redis_handle, spawn_worker, workers_up
):
    """Default lease (10 s): the dead worker's chunk expires and the live one retries it."""
    settings = _settings()
    jobs = JobClient(redis_handle, settings, FAKE_FP)
    doomed = spawn_worker(redis_handle.url, delay=60.0, name="doomed")
    workers_up(redis_handle, 1)
    st = asyncio.run(jobs.submit(_items([TextInput(f"t{i}") for i in range(4)]), {}))
    _wait_running(redis_handle, jobs, st.id, "doomed")
    spawn_worker(redis_handle.url, delay=0.0, name="rescuer")
    workers_up(redis_handle, 2)
    doomed.send_signal(signal.SIGKILL)
    start = time.monotonic()
    result = asyncio.run(jobs.wait(st.id, timeout=60))
    took = time.monotonic() - start
    assert len(result) == 4 and took < 16, took
    time.sleep(1.0)  # the retried chunk's RQ bookkeeping ends cleanly: it is not failed
    assert FailedJobRegistry(jobs.queue, connection=jobs.sync).count == 0


def test_all_workers_killed_then_one_started_finishes_the_job(
    redis_handle, spawn_worker, workers_up
):
    settings = _settings(job_lease=3.0)
    jobs = JobClient(redis_handle, settings, FAKE_FP)
    doomed = [spawn_worker(redis_handle.url, delay=60.0, lease=3, name=f"d{i}") for i in (1, 2)]
    workers_up(redis_handle, 2)
    st = asyncio.run(jobs.submit(_items([TextInput(f"t{i}") for i in range(8)]), {}))
    deadline = time.monotonic() + 30
    while len(_running_on(redis_handle, jobs.queue)) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    for p in doomed:
        p.send_signal(signal.SIGKILL)
    time.sleep(1.0)
    spawn_worker(redis_handle.url, delay=0.0, lease=3, name="late")
    result = asyncio.run(jobs.wait(st.id, timeout=60))
    assert len(result) == 8
    time.sleep(1.0)
    assert FailedJobRegistry(jobs.queue, connection=jobs.sync).count == 0


def test_the_same_chunk_killed_three_times_fails_the_job_clearly(
    redis_handle, spawn_worker, workers_up
):
    settings = _settings(job_lease=2.0)
    jobs = JobClient(redis_handle, settings, FAKE_FP)
    st = asyncio.run(jobs.submit(_items([TextInput("x")]), {}))
    for attempt in range(3):
        name = f"victim{attempt}"
        proc = spawn_worker(redis_handle.url, delay=60.0, lease=2, name=name)
        _wait_running(redis_handle, jobs, st.id, name)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    spawn_worker(redis_handle.url, delay=0.0, lease=2, name="witness")  # its maintenance tells
    start = time.monotonic()
    deadline = start + 30
    while (status := asyncio.run(jobs.status(st.id))).status != "failed":
        assert status.status in ("queued", "running"), status
        assert time.monotonic() < deadline
        time.sleep(0.1)
    msg = status.error["error"]["message"]
    assert "after 3 attempts" in msg and "its worker stopped responding" in msg, msg
    assert "items 0..0" in msg


def test_no_worker_fails_clearly_after_the_orphan_timeout(redis_handle, spawn_worker,
                                                          workers_up):  # fmt: skip
    settings = _settings(orphan_timeout=2.0)
    jobs = JobClient(redis_handle, settings, FAKE_FP)
    other = spawn_worker(redis_handle.url, extra=("--fingerprint-suffix", "|other-prompt"),
                         name="mismatched")  # fmt: skip
    workers_up(redis_handle, 1)
    st = asyncio.run(jobs.submit(_items([TextInput("x")]), {}))
    start = time.monotonic()
    with pytest.raises(Exception) as info:
        asyncio.run(jobs.wait(st.id, timeout=30))
    assert time.monotonic() - start < 10
    assert "no live mlx-embeddings-worker serves this model" in info.value.message
    assert "mismatched" in info.value.message  # the worker for other settings is named
    assert other.poll() is None  # it never took (and failed) the job


def test_restart_on_same_data_dir_keeps_results_and_queued_jobs(
    redis_factory, spawn_worker, workers_up
):
    settings = _settings()
    first = redis_factory()

    async def submit(handle, n, wait=False):
        jobs = JobClient(handle, settings, FAKE_FP)
        st = await jobs.submit(_items([TextInput(f"r{i}") for i in range(n)]), {"n": n})
        out = await jobs.wait(st.id, timeout=30) if wait else None
        await jobs.close()
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
        jobs = JobClient(second, settings, FAKE_FP)
        again = await jobs.result(done_id)
        st = await jobs.status(queued_id)
        assert st.status == "queued" and st.meta["n"] == 5
        assert Queue(jobs.queue, connection=jobs.sync).count == 2  # RQ's queue survived too
        spawn_worker(second.url)
        late = await jobs.wait(queued_id, timeout=30)
        await jobs.close()
        return again, late

    again, late = asyncio.run(after())
    for a, b in zip(before, again, strict=True):
        assert a.vectors.tobytes() == b.vectors.tobytes()
    assert len(late) == 5


def test_redis_stopped_cache_is_skipped_and_jobs_are_503(redis_factory, colqwen_engine,
                                                         tiny_colqwen_path):  # fmt: skip
    handle = redis_factory()
    settings = _settings(str(tiny_colqwen_path))
    images = [_image(300 + i, size=(64, 64)) for i in range(4)]

    async def go():
        cache = EmbeddingCache.from_settings(handle, settings)
        pipe = Pipeline(colqwen_engine, cache)
        jobs = JobClient(handle, settings, colqwen_engine.info.fingerprint)
        handle.stop()
        keys = pipe.keys(images, CachePolicy(), truncate=False)
        params = [f"input[{i}]" for i in range(4)]
        out = await pipe.run(images, params, keys, CachePolicy(), truncate=False)
        assert len(out) == 4 and cache.stats.skipped == 4 and not cache.available
        with pytest.raises(QueueUnavailable) as info:
            await jobs.submit(_items(images), {})
        assert info.value.headers["Retry-After"] == "5"
        with pytest.raises(QueueUnavailable):
            await jobs.status("embjob_whatever")
        await cache.close()

    asyncio.run(go())


def test_worker_logs_a_redis_outage_once_and_its_end(redis_factory, spawn_worker, workers_up):
    handle = redis_factory()
    worker = spawn_worker(handle.url, stderr=subprocess.PIPE, text=True, extra=("--log-level",
                          "info"))  # fmt: skip
    workers_up(handle, 1)
    handle.stop()
    time.sleep(6)
    again = redis_factory()
    workers_up(again, 1)
    time.sleep(1.5)
    worker.send_signal(signal.SIGKILL)
    log = worker.communicate(timeout=10)[1]
    assert log.count("could not connect to Redis") == 1, log
    assert "Redis is reachable again" in log, log


def test_a_worker_stopped_while_redis_is_down_exits_cleanly(redis_factory, spawn_worker,
                                                            workers_up):  # fmt: skip
    handle = redis_factory()
    worker = spawn_worker(handle.url, stderr=subprocess.PIPE, text=True)
    workers_up(handle, 1)
    handle.stop()
    time.sleep(1.5)
    worker.send_signal(signal.SIGINT)
    _, err = worker.communicate(timeout=20)
    assert worker.returncode == 0, err
    assert "Traceback" not in err, err
