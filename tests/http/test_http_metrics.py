"""GET /metrics through real HTTP, parsed with prometheus_client's own parser: the counters move
with the requests, the gauges read the engine, the cache, Redis and the jobs."""

from __future__ import annotations

import dataclasses
import time

import pytest
from http_servers import MV_MODEL, MV_SETTINGS, FakeAdapter, serve_with_jobs
from prometheus_client.parser import text_string_to_metric_families


def scrape(client) -> dict[tuple[str, tuple], float]:
    r = client.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def server():
    settings = dataclasses.replace(MV_SETTINGS, queue_threshold=3, job_chunk_size=2)
    adapter = FakeAdapter(kind="multi_vector", name=MV_MODEL, dim=8, max_tokens=16)
    served, thread, _ = serve_with_jobs(settings, adapter)
    yield served
    thread.stop()


ROUTE = "/v1/embeddings"


def test_counters_move_after_requests(server) -> None:
    with server.client() as c:
        before = scrape(c)
        body = {"model": MV_MODEL, "input": ["alpha beta", "gamma delta epsilon"]}
        r = c.post(ROUTE, json=body)
        assert r.status_code == 200
        tokens = r.json()["usage"]["total_tokens"]
        lane = r.headers["x-lane"]
        assert c.post(ROUTE, json=body).headers["x-cache"] == "hit"
        assert c.post(ROUTE, json={"model": "nope", "input": ["x"]}).status_code == 404
        time.sleep(0.1)  # the response hook runs as the response is sent
        after = scrape(c)

    def moved(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    ok = {"route": ROUTE, "method": "POST", "status": "200"}
    assert moved("mlxemb_requests_total", **ok) == 2
    assert moved("mlxemb_requests_total", route=ROUTE, method="POST", status="404") == 1
    assert moved("mlxemb_request_duration_seconds_count", route=ROUTE, lane=lane) == 1
    assert moved("mlxemb_request_duration_seconds_count", route=ROUTE, lane="cache") == 1
    assert moved("mlxemb_embedded_items_total", model=MV_MODEL, modality="text") == 4
    assert moved("mlxemb_embedded_tokens_total", model=MV_MODEL, modality="text") == 2 * tokens
    assert moved("mlxemb_batch_size_count", lane=lane) >= 1
    assert moved("mlxemb_batch_size_sum", lane=lane) == 2
    assert moved("mlxemb_batch_padding_ratio_count", lane=lane) >= 1
    assert moved("mlxemb_engine_items_total") == 2
    assert moved("mlxemb_engine_batches_total", lane=lane) >= 1
    assert moved("mlxemb_cache_hits_total") == 2 and moved("mlxemb_cache_misses_total") == 2
    assert moved("mlxemb_cache_writes_total") == 2
    assert value(after, "mlxemb_redis_up") == 1
    assert value(after, "mlxemb_model_ready") == 1
    assert value(after, "mlxemb_model_load_seconds") >= 0
    assert ("mlxemb_model_load_seconds", ()) in after
    assert value(after, "mlxemb_workers_live") == 1  # the local worker
    assert value(after, "mlxemb_queue_depth", lane="interactive") == 0
    assert ("mlxemb_queue_depth", (("lane", "bulk"),)) in after
    assert value(after, "mlxemb_process_resident_memory_bytes") > 10 << 20
    # the scrape itself is counted, on its route
    assert moved("mlxemb_requests_total", route="/metrics", method="GET", status="200") == 1


def test_jobs_by_state_and_unmatched_routes(server) -> None:
    with server.client() as c:
        job = c.post("/v1/embeddings/jobs", json={"model": MV_MODEL, "input": ["a b", "c"]})
        assert job.status_code == 202
        url = f"/v1/embeddings/jobs/{job.json()['id']}"
        deadline = time.time() + 10
        while c.get(url).json()["status"] != "succeeded":
            assert time.time() < deadline
            time.sleep(0.05)
        assert c.get(url).status_code == 200  # at least two status reads, however fast the job
        c.get("/no/such/thing")
        time.sleep(0.1)
        samples = scrape(c)
    assert value(samples, "mlxemb_jobs", state="succeeded") == 1
    assert value(samples, "mlxemb_jobs", state="running") == 0
    assert ("mlxemb_chunk_retries_total", ()) in samples
    route = "/v1/embeddings/jobs/<job_id>"
    assert value(samples, "mlxemb_requests_total", route=route, method="GET", status="200") >= 2
    assert value(samples, "mlxemb_requests_total", route="unmatched", method="GET", status="404")
    assert value(samples, "mlxemb_request_duration_seconds_count", route=route, lane="none") >= 2


def test_two_apps_in_one_process_have_their_own_registries(server, make_server) -> None:
    other = make_server()
    with server.client() as a, other.client() as b:
        for _ in range(3):
            a.post(ROUTE, json={"model": MV_MODEL, "input": ["x y"]})
        time.sleep(0.1)
        sa, sb = scrape(a), scrape(b)
    ok = {"route": ROUTE, "method": "POST", "status": "200"}
    assert value(sa, "mlxemb_requests_total", **ok) == 3
    assert value(sb, "mlxemb_requests_total", **ok) == 0
    assert ("mlxemb_redis_up", ()) not in sb  # no Redis configured there
