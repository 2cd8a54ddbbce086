"""Cache, queue dispatch and the async jobs API through real HTTP, on an in-memory Redis
(fakeredis, shared with the in-process RQ worker). The real redis-server + worker-process
versions live in tests/integration."""

from __future__ import annotations

import base64
import io
import threading
import time

import httpx
import numpy as np
import pytest
from fake_adapter import fake_engine
from http_servers import MV_MODEL, MV_SETTINGS, FakeAdapter, Served, serve
from PIL import Image

from app.backends import Backends
from app.redis_embedded import RedisHandle, start_fakeredis


def _png_uri(seed: int, size: tuple[int, int] = (32, 24)) -> str:
    rng = np.random.default_rng(seed)
    im = Image.fromarray((rng.random((size[1], size[0], 3)) * 255).astype("uint8"))
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _served(adapter: FakeAdapter, handle: RedisHandle | None = None, **overrides):
    settings = MV_SETTINGS.__class__(
        **{**MV_SETTINGS.__dict__, "queue_threshold": 3, "job_chunk_size": 2, **overrides}
    )
    backends = Backends(settings, handle or start_fakeredis())
    served, thread = serve(settings, adapter, backends=backends)
    deadline = time.time() + 10
    while backends.jobs is None and time.time() < deadline:  # attaches once the model is ready
        time.sleep(0.02)
    return served, thread, backends


@pytest.fixture
def cached_server():
    adapter = FakeAdapter(kind="multi_vector", name=MV_MODEL, dim=8, max_tokens=16)
    served, thread, backends = _served(adapter)
    yield served, adapter, backends
    thread.stop()


def post(served: Served, body: dict, path: str = "/v1/embeddings", **kw) -> httpx.Response:
    with served.client() as c:
        return c.post(path, json=body, **kw)


def test_repeat_is_a_cache_hit_with_identical_vectors_and_no_forward(cached_server) -> None:
    served, adapter, _ = cached_server
    body = {"model": MV_MODEL, "input": ["alpha beta", _png_uri(1)], "encoding_format": "base64"}
    first = post(served, body)
    assert first.status_code == 200, first.text
    assert first.headers["x-cache"] == "miss"
    seen = len(adapter.seen)
    second = post(served, body)
    assert second.headers["x-cache"] == "hit"
    assert len(adapter.seen) == seen, "a cache hit ran a forward pass"
    assert second.json()["data"] == first.json()["data"]  # bit-identical (base64 bytes)
    assert second.json()["usage"] == first.json()["usage"]


def test_a_request_repeating_an_input_computes_it_once(cached_server) -> None:
    served, adapter, _ = cached_server
    before = len(adapter.seen)
    r = post(served, {"model": MV_MODEL, "input": ["same words", "other", "same words"]})
    assert r.status_code == 200 and r.headers["x-cache"] == "miss", r.text
    assert adapter.seen[before:] == ["tok:same", "tok:words", "tok:other"]
    data = r.json()["data"]
    assert data[0]["embedding"] == data[2]["embedding"] and [d["index"] for d in data] == [0, 1, 2]
    assert r.json()["usage"]["prompt_tokens"] == 5  # every input counts


def test_partial_hit_computes_only_the_misses(cached_server) -> None:
    served, adapter, _ = cached_server
    words = [f"w{i} x{i}" for i in range(8)]
    first = post(served, {"model": MV_MODEL, "input": words[:5]})
    assert first.headers.get("x-cache") == "miss", first.text
    before = len(adapter.seen)
    r = post(served, {"model": MV_MODEL, "input": words})
    assert r.headers.get("x-cache") == "partial", r.text
    assert adapter.seen[before:] == [f"tok:{w}" for s in words[5:] for w in s.split()]
    assert [d["index"] for d in r.json()["data"]] == list(range(8))


def test_cache_control_no_cache_recomputes_and_refreshes(cached_server) -> None:
    served, adapter, _ = cached_server
    body = {"model": MV_MODEL, "input": "gamma"}
    post(served, body)
    before = len(adapter.seen)
    r = post(served, body, headers={"Cache-Control": "no-cache"})
    assert r.headers["x-cache"] == "bypass"
    assert len(adapter.seen) == before + 1


def test_big_image_request_goes_through_a_job_and_answers_normally(cached_server) -> None:
    served, adapter, backends = cached_server
    images = [_png_uri(100 + i) for i in range(5)]  # more than queue_threshold=3
    inline = post(served, {"model": MV_MODEL, "input": images[:2]}).json()
    r = post(served, {"model": MV_MODEL, "input": images}, headers={"Cache-Control": "no-cache"})
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert len(data) == 5
    assert [d["embedding"] for d in data[:2]] == [d["embedding"] for d in inline["data"]]
    # the 2-image request ran inline; the 5-image one became exactly one job
    assert backends.jobs.sync.zcard("mlxemb:jobs:expiry") == 1
    assert backends.local_worker is not None and backends.local_worker.alive


def test_job_lifecycle_submit_poll_result_cancel(cached_server) -> None:
    served, _, _ = cached_server
    inputs = ["a b", _png_uri(7), "c d e", _png_uri(8), "f"]
    with served.client() as c:
        r = c.post("/v1/embeddings/jobs", json={"model": MV_MODEL, "input": inputs})
        assert r.status_code == 202, r.text
        job = r.json()
        assert job["object"] == "embedding.job" and job["id"].startswith("embjob_")
        assert job["progress"]["total"] == 5
        assert r.headers["location"] == f"/v1/embeddings/jobs/{job['id']}"
        deadline = time.time() + 10
        while True:
            st = c.get(f"/v1/embeddings/jobs/{job['id']}").json()
            if st["status"] == "succeeded" or time.time() > deadline:
                break
            time.sleep(0.05)
        assert st["status"] == "succeeded" and st["progress"] == {"completed": 5, "total": 5}
        result = c.get(f"/v1/embeddings/jobs/{job['id']}/result").json()
        inline = c.post("/v1/embeddings", json={"model": MV_MODEL, "input": inputs}).json()
        assert result["data"] == inline["data"] and result["usage"] == inline["usage"]
        b64 = c.get(f"/v1/embeddings/jobs/{job['id']}/result?encoding_format=base64").json()
        first = np.frombuffer(base64.b64decode(b64["data"][0]["embedding"]), "<f4")
        np.testing.assert_array_equal(
            first.reshape(b64["data"][0]["shape"]),
            np.asarray(result["data"][0]["embedding"], dtype=np.float32),
        )
        done = c.delete(f"/v1/embeddings/jobs/{job['id']}")
        assert done.status_code == 200 and done.json()["status"] == "succeeded"
        missing = c.get("/v1/embeddings/jobs/embjob_doesnotexist")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "job_not_found"


def test_result_while_running_is_409_cancel_stops_it_and_its_result_is_409() -> None:
    adapter = FakeAdapter(kind="multi_vector", name=MV_MODEL, dim=8, forward_delay=0.3)
    served, thread, _ = _served(adapter)
    try:
        with served.client() as c:
            job = c.post(
                "/v1/embeddings/jobs",
                json={"model": MV_MODEL, "input": [f"t{i}" for i in range(8)]},
            ).json()
            early = c.get(f"/v1/embeddings/jobs/{job['id']}/result")
            assert early.status_code == 409
            assert early.json()["error"]["code"] == "job_not_finished"
            cancelled = c.delete(f"/v1/embeddings/jobs/{job['id']}").json()
            assert cancelled["status"] == "cancelled"
            time.sleep(0.8)
            st = c.get(f"/v1/embeddings/jobs/{job['id']}").json()
            assert st["status"] == "cancelled" and st["progress"]["completed"] < 8
            # a question about a cancelled job is a 409, never a 500
            r = c.get(f"/v1/embeddings/jobs/{job['id']}/result")
            assert r.status_code == 409, r.text
            err = r.json()["error"]
            assert err["code"] == "job_cancelled" and err["param"] == "job_id"
    finally:
        thread.stop()


def test_bad_item_is_rejected_before_anything_is_queued(cached_server) -> None:
    served, adapter, backends = cached_server
    before = len(adapter.seen)
    r = post(
        served,
        {"model": MV_MODEL, "input": ["fine", "x " * 40, _png_uri(3)]},
        path="/v1/embeddings/jobs",
    )
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["param"] == "input[1]" and err["code"] == "context_length_exceeded"
    assert backends.jobs.sync.zcard("mlxemb:jobs:expiry") == 0
    assert len(adapter.seen) == before


def test_sync_request_without_a_live_worker_is_computed_inline() -> None:
    adapter = FakeAdapter(kind="multi_vector", name=MV_MODEL, dim=8)
    served, thread, backends = _served(adapter, local_worker=False, job_timeout=1.0)
    try:
        images = [_png_uri(200 + i) for i in range(5)]  # more than queue_threshold=3
        r = post(served, {"model": MV_MODEL, "input": images})
        assert r.status_code == 200, r.text
        assert len(r.json()["data"]) == 5
        assert backends.jobs.sync.zcard("mlxemb:jobs:expiry") == 0  # no job was made
    finally:
        thread.stop()


def test_sync_request_times_out_with_504_when_the_worker_is_too_slow() -> None:
    adapter = FakeAdapter(kind="multi_vector", name=MV_MODEL, dim=8, forward_delay=1.5)
    served, thread, _ = _served(adapter, job_timeout=1.0)
    try:
        images = [_png_uri(300 + i) for i in range(5)]
        t0 = time.time()
        r = post(served, {"model": MV_MODEL, "input": images})
        assert r.status_code == 504, r.text
        assert r.json()["error"]["code"] == "job_timeout"
        assert time.time() - t0 < 10
    finally:
        thread.stop()


def test_redis_unreachable_inline_still_works_and_jobs_answer_503() -> None:
    adapter = FakeAdapter(kind="multi_vector", name=MV_MODEL, dim=8)
    dead = RedisHandle(kind="external", url="redis://127.0.0.1:1/0")
    served, thread, _ = _served(adapter, dead, local_worker=False)
    try:
        r = post(served, {"model": MV_MODEL, "input": ["still works"]})
        assert r.status_code == 200, r.text
        assert r.headers["x-cache"] == "off"  # not "miss": nothing was looked up
        r = post(served, {"model": MV_MODEL, "input": "x"}, path="/v1/embeddings/jobs")
        assert r.status_code == 503, r.text
        assert r.headers["retry-after"]
        assert r.json()["error"]["code"] == "queue_unavailable"
        with served.client() as c:
            health = c.get("/health").json()
        assert health["redis"]["status"].startswith("unreachable")
        assert health["jobs_api"] == "unavailable"  # not "open" while it answers 503
    finally:
        thread.stop()


def test_health_reports_redis_workers_cache_and_jobs_api(cached_server) -> None:
    served, _, backends = cached_server
    with served.client() as c:
        r = c.get("/health")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "ok" and body["jobs_api"] == "open"
    assert body["redis"] == {"kind": "fakeredis", "status": "ok"}
    assert body["workers"]["alive"] == 1 and body["local_worker"] is True
    assert body["cache"]["enabled"] is True


def test_health_is_503_until_the_jobs_api_opens() -> None:
    gate = threading.Event()
    adapter = FakeAdapter(kind="multi_vector", name=MV_MODEL, dim=8)
    engine = fake_engine(adapter, load_gate=gate)
    backends = Backends(MV_SETTINGS, start_fakeredis())
    served, thread = serve(MV_SETTINGS, adapter, engine=engine, backends=backends, wait_ready=False)
    try:
        with served.client() as c:
            assert c.get("/health").status_code == 503
            gate.set()
            deadline = time.time() + 10
            while c.get("/health").status_code != 200:
                assert time.time() < deadline
                time.sleep(0.02)
            # healthy means every route is ready: the jobs API answers at once
            r = c.post("/v1/embeddings/jobs", json={"model": MV_MODEL, "input": "x"})
            assert r.status_code == 202, r.text
    finally:
        thread.stop()
