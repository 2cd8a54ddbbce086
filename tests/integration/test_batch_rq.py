"""The Batch API on the job queue: a test server (real socket, the official openai client) on a
real redis-server, its lines run as RQ chunks by real worker subprocesses
(``tests/fake_worker.py``: the real worker over the fake model, so that "mid-chunk" is a wide,
deterministic window). Who ran what is read from RQ's and the jobs' records, never timed."""

from __future__ import annotations

import base64
import dataclasses
import io
import signal
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import openai
import orjson
import pytest
from batch_checks import file_lines, wait_batch
from PIL import Image
from rq import Queue, Worker
from rq.registry import FailedJobRegistry, StartedJobRegistry

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "http"))
from http_servers import MV_MODEL, MV_SETTINGS, FakeAdapter, serve_with_jobs  # noqa: E402
from media_server import make_pdf  # noqa: E402

from app.jobs.chunks import queue_name  # noqa: E402
from app.jobs.store import job_key  # noqa: E402

pytestmark = pytest.mark.slow

QUEUE = queue_name("mlx-embeddings", FakeAdapter(max_tokens=512).info.fingerprint)


def _png_uri(seed: int) -> str:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray((rng.random((24, 32, 3)) * 255).astype("uint8")).save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _pdf_uri() -> str:
    return "data:application/pdf;base64," + base64.b64encode(make_pdf()).decode()


def _serve(handle, data_dir: Path, **kw):
    settings = dataclasses.replace(
        MV_SETTINGS, data_dir=data_dir, local_worker=False, job_lease=3.0, **kw
    )
    adapter = FakeAdapter(kind="multi_vector", name=MV_MODEL, dim=8, max_tokens=512)
    served, thread, _ = serve_with_jobs(settings, adapter, handle)
    return served, thread


def _client(served) -> openai.OpenAI:
    return openai.OpenAI(base_url=served.url + "/v1", api_key="-", max_retries=0, timeout=30)


def _submit(client: openai.OpenAI, bodies: list[dict]):
    data = b"\n".join(
        orjson.dumps({"custom_id": f"c{i}", "method": "POST", "url": "/v1/embeddings", "body": b})
        for i, b in enumerate(bodies)
    )
    f = client.files.create(file=("in.jsonl", data), purpose="batch")
    return client.batches.create(
        input_file_id=f.id, endpoint="/v1/embeddings", completion_window="24h"
    )


def _texts(n: int, tag: str = "") -> list[dict]:
    return [{"model": MV_MODEL, "input": [f"{tag}text {i}", f"{tag}more {i}"]} for i in range(n)]


def _batch_jobs(handle, batch_id: str) -> list[dict]:
    """The job records (app.jobs.store) the batch's windows were submitted as."""
    r = handle.sync_client()
    out = []
    for key in r.scan_iter(match=job_key("embjob_*")):
        if key.count(b":") != 2:  # the job's own hash, not its :out
            continue
        h = r.hgetall(key)
        meta = orjson.loads(h.get(b"meta") or b"{}")
        if meta.get("batch") == batch_id:
            out.append({"status": h[b"status"].decode(), "total": int(h[b"total"]),
                        "created_at": float(h[b"created_at"])})  # fmt: skip
    return out


def _done_by(handle) -> dict[str, int]:
    """Chunks each live worker of the queue finished (RQ's own worker records)."""
    r = handle.sync_client()
    return {w.name: w.successful_job_count for w in Worker.all(queue=Queue(QUEUE, connection=r))}


def _running_on(handle) -> list[str]:
    from rq.job import Job

    r = handle.sync_client()
    entries = r.zrange(StartedJobRegistry(QUEUE, connection=r).key, 0, -1)
    ids = [e.decode().split(":")[0] for e in entries]
    return [j.worker_name for j in Job.fetch_many(ids, connection=r) if j is not None]


def test_two_workers_share_a_batch_of_text_images_and_pdfs(
    redis_handle, data_dir, spawn_worker, workers_up
) -> None:
    """Output lines equal /v1/embeddings computed afresh (no cache) for the same bodies, PNG
    and PDF inputs included; both workers ran chunks of the one batch."""
    served, thread = _serve(redis_handle, data_dir)
    try:
        for name in ("w1", "w2"):
            spawn_worker(redis_handle.url, delay=0.05, lease=3, name=name)
        workers_up(redis_handle, 2)
        bodies = _texts(300) + [
            {"model": MV_MODEL, "input": [_png_uri(1), "a caption"], "encoding_format": "base64"},
            {"model": MV_MODEL, "input": [_pdf_uri()]},
            {"model": MV_MODEL, "input": "bad one", "dimensions": 3},  # a 4xx line
        ]
        client = _client(served)
        batch = _submit(client, bodies)
        done = wait_batch(client, batch.id)
        assert done.status == "completed", done
        counts = done.request_counts
        assert (counts.total, counts.completed, counts.failed) == (303, 302, 1)
        jobs = _batch_jobs(redis_handle, batch.id)
        assert jobs and {j["status"] for j in jobs} == {"succeeded"}
        assert sum(j["total"] for j in jobs) == 2 * 300 + 2 + 3  # every item computed once
        ran = _done_by(redis_handle)
        assert ran["w1"] > 0 and ran["w2"] > 0, ran
        outs = {x["custom_id"]: x for x in file_lines(client, done.output_file_id)}
        errs = file_lines(client, done.error_file_id)
        assert [e["custom_id"] for e in errs] == ["c302"]
        direct = httpx.Client(base_url=served.url, headers={"Cache-Control": "no-cache"})
        assert direct.post("/v1/embeddings", json=bodies[302]).json() == errs[0]["response"]["body"]
        assert errs[0]["response"]["status_code"] == 400
        for i in (0, 7, 299, 300, 301):
            want = direct.post("/v1/embeddings", json=bodies[i]).json()
            assert outs[f"c{i}"]["response"]["body"] == want, i
        pdf = outs["c301"]["response"]["body"]["data"]
        assert [d["page"] for d in pdf] == [1, 2, 3]
        # the same batch again: all from the cache, no job at all, the same bodies
        again = wait_batch(client, _submit(client, bodies).id)
        assert again.request_counts.completed == 302 and _batch_jobs(redis_handle, again.id) == []
        redone = {x["custom_id"]: x for x in file_lines(client, again.output_file_id)}
        assert all(redone[k]["response"]["body"] == v["response"]["body"] for k, v in outs.items())
    finally:
        thread.stop()  # type: ignore[attr-defined]


def test_worker_killed_mid_batch_the_batch_completes(
    redis_handle, data_dir, spawn_worker, workers_up
) -> None:
    served, thread = _serve(redis_handle, data_dir, cache=False)
    try:
        doomed = spawn_worker(redis_handle.url, delay=60.0, lease=3, name="doomed")
        workers_up(redis_handle, 1)
        client = _client(served)
        batch = _submit(client, _texts(40))
        deadline = time.monotonic() + 30
        while "doomed" not in _running_on(redis_handle):
            assert time.monotonic() < deadline, "the worker never started a chunk"
            time.sleep(0.05)
        spawn_worker(redis_handle.url, delay=0.0, lease=3, name="rescuer")
        workers_up(redis_handle, 2)
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(10)
        done = wait_batch(client, batch.id)
        assert done.status == "completed", done
        assert done.request_counts.completed == 40 and done.request_counts.failed == 0
        ids = sorted(x["custom_id"] for x in file_lines(client, done.output_file_id))
        assert ids == sorted(f"c{i}" for i in range(40))
        assert _done_by(redis_handle).get("rescuer", 0) >= 1  # the retried chunk ran there
        assert {j["status"] for j in _batch_jobs(redis_handle, batch.id)} == {"succeeded"}
        r = redis_handle.sync_client()
        assert FailedJobRegistry(QUEUE, connection=r).count == 0
    finally:
        thread.stop()  # type: ignore[attr-defined]


def test_cancel_mid_batch_cancels_its_queued_chunks(
    redis_handle, data_dir, spawn_worker, workers_up, monkeypatch
) -> None:
    monkeypatch.setattr("app.batches.WINDOW_LINES", 10)
    served, thread = _serve(redis_handle, data_dir, cache=False, job_chunk_size=2)
    try:
        spawn_worker(redis_handle.url, delay=0.3, lease=3, name="slow")
        workers_up(redis_handle, 1)
        client = _client(served)
        batch = _submit(client, _texts(200, "cancel "))
        deadline = time.monotonic() + 60
        while client.batches.retrieve(batch.id).request_counts.completed < 10:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert client.batches.cancel(batch.id).status == "cancelling"
        done = wait_batch(client, batch.id)
        assert done.status == "cancelled" and done.cancelled_at
        assert 10 <= done.request_counts.completed < 200
        assert len(file_lines(client, done.output_file_id)) == done.request_counts.completed
        jobs = _batch_jobs(redis_handle, batch.id)
        assert "cancelled" in {j["status"] for j in jobs}
        r = redis_handle.sync_client()
        assert Queue(QUEUE, connection=r).count == 0  # no chunk left waiting for a worker
    finally:
        thread.stop()  # type: ignore[attr-defined]


def test_server_restarted_mid_batch_no_line_done_twice(
    redis_handle, data_dir, spawn_worker, workers_up, monkeypatch
) -> None:
    """Stop the server mid-batch; another on the same Redis and files finishes it from the
    recorded window: each line once in the output, and the items submitted (the job records,
    no cache) at most the DEPTH windows in flight beyond the batch."""
    from app.batches import DEPTH

    window, n = 10, 120
    monkeypatch.setattr("app.batches.WINDOW_LINES", window)
    spawn_worker(redis_handle.url, delay=0.05, lease=3, name="w")
    workers_up(redis_handle, 1)
    first, thread = _serve(redis_handle, data_dir, cache=False)
    client = _client(first)
    batch = _submit(client, _texts(n, "restart "))
    deadline = time.monotonic() + 60
    while client.batches.retrieve(batch.id).request_counts.completed < 2 * window:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    thread.stop()  # type: ignore[attr-defined]
    stopped_at = time.time()
    second, thread = _serve(redis_handle, data_dir, cache=False)
    try:
        client = _client(second)
        done = wait_batch(client, batch.id)
        assert done.status == "completed", done
        assert done.request_counts.completed == n and done.request_counts.failed == 0
        ids = [x["custom_id"] for x in file_lines(client, done.output_file_id)]
        assert sorted(ids) == sorted(f"c{i}" for i in range(n))  # each line exactly once
        jobs = _batch_jobs(redis_handle, batch.id)
        submitted = sum(j["total"] for j in jobs)
        assert 2 * n <= submitted <= 2 * (n + DEPTH * window)
        again = sum(j["total"] for j in jobs if j["created_at"] > stopped_at)
        assert again <= 2 * (n - 2 * window)  # the second server did not start over
    finally:
        thread.stop()  # type: ignore[attr-defined]


def test_no_live_worker_the_server_computes_the_batch(redis_handle, data_dir) -> None:
    """--no-local-worker and no worker started: the windows run in the server's bulk lane."""
    served, thread = _serve(redis_handle, data_dir)
    try:
        client = _client(served)
        bodies = _texts(30, "alone ")
        done = wait_batch(client, _submit(client, bodies).id)
        assert done.status == "completed" and done.request_counts.completed == 30
        assert _batch_jobs(redis_handle, done.id) == []  # nothing queued
        line = file_lines(client, done.output_file_id)[0]
        want = httpx.post(served.url + "/v1/embeddings", json=bodies[int(line["custom_id"][1:])])
        assert line["response"]["body"] == want.json()
    finally:
        thread.stop()  # type: ignore[attr-defined]
