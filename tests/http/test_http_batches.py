"""The OpenAI Files and Batch APIs through a real socket with the official ``openai`` client,
on a server with fakeredis and its in-process worker (app.files, app.batches)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import orjson
import pytest
from batch_checks import file_lines, request_line, wait_batch
from http_servers import MV_MODEL, MV_SETTINGS, FakeAdapter, Served, serve_with_jobs

KEY_A = "sk-batch-alice-0123456789"
KEY_B = "sk-batch-bob-9876543210"


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[Served]:
    settings = dataclasses.replace(
        MV_SETTINGS,
        queue_threshold=3,
        job_chunk_size=2,
        api_keys=(KEY_A, KEY_B),
        data_dir=tmp_path_factory.mktemp("data"),
    )
    adapter = FakeAdapter(
        kind="multi_vector", name=MV_MODEL, dim=8, max_tokens=16, forward_delay=0.01
    )
    served, thread, _ = serve_with_jobs(settings, adapter)
    yield served
    thread.stop()


def _client(served: Served, key: str = KEY_A) -> openai.OpenAI:
    return openai.OpenAI(base_url=served.url + "/v1", api_key=key, max_retries=0, timeout=30)


def _bodies(n: int) -> list[dict]:
    return [{"model": MV_MODEL, "input": [f"text number {i}", f"other {i}"]} for i in range(n)]


def test_files_upload_list_get_content_delete(served: Served) -> None:
    client = _client(served)
    data = b"\n".join(request_line(f"r{i}", b) for i, b in enumerate(_bodies(3))) + b"\n"
    f = client.files.create(file=("in.jsonl", data), purpose="batch")
    assert f.object == "file" and f.bytes == len(data) and f.filename == "in.jsonl"
    assert f.purpose == "batch" and f.id.startswith("file-")
    assert client.files.retrieve(f.id).id == f.id
    assert f.id in [x.id for x in client.files.list()]
    assert client.files.content(f.id).content == data
    other = _client(served, KEY_B)
    with pytest.raises(openai.NotFoundError):
        other.files.retrieve(f.id)
    with pytest.raises(openai.NotFoundError):
        other.files.content(f.id)
    with pytest.raises(openai.NotFoundError):
        other.files.delete(f.id)
    assert f.id not in [x.id for x in other.files.list()]
    deleted = client.files.delete(f.id)
    assert deleted.deleted and deleted.id == f.id
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(f.id)


def test_file_limits(served: Served) -> None:
    client = _client(served)
    # streamed to disk: over this server's --max-body-bytes (256 KiB), under OpenAI's 200 MB
    big = b"".join(request_line(f"r{i}", {"model": MV_MODEL, "input": "x" * 200}) + b"\n"
                   for i in range(4000))  # fmt: skip
    assert len(big) > served.settings.max_body_bytes * 3
    f = client.files.create(file=("big.jsonl", big), purpose="batch")
    assert f.bytes == len(big) and client.files.content(f.id).content == big
    client.files.delete(f.id)
    plain = httpx.post(
        served.url + "/v1/files", json={"purpose": "batch"}, headers={"x-api-key": KEY_A}
    )
    assert plain.status_code == 400 and plain.json()["error"]["param"] == "file"
    with pytest.raises(openai.BadRequestError) as exc:
        client.files.create(file=("in.jsonl", b"{}\n" * 50_001), purpose="batch")
    assert "50000" in str(exc.value)
    with pytest.raises(openai.BadRequestError):
        client.files.create(file=("in.jsonl", b"{}\n"), purpose="fine-tune")
    with pytest.raises(openai.BadRequestError):
        client.files.create(file=("in.jsonl", b""), purpose="batch")


def test_batch_end_to_end_equals_embeddings(served: Served) -> None:
    client = _client(served)
    bodies = _bodies(20) + [
        {"model": MV_MODEL, "input": "a single string", "encoding_format": "base64"},
        {"model": MV_MODEL, "input": ["pool these tokens please"],
         "pooling": {"method": "hierarchical", "pool_factor": 2}},
        {"model": MV_MODEL, "input": ["no page"], "pooling": {"method": "rows_cols"}},  # a 400
    ]  # fmt: skip
    data = b"\n".join(request_line(f"req-{i}", b) for i, b in enumerate(bodies))
    f = client.files.create(file=("in.jsonl", data), purpose="batch")
    batch = client.batches.create(
        input_file_id=f.id,
        endpoint="/v1/embeddings",
        completion_window="24h",
        metadata={"job": "e2e"},
    )
    assert batch.status == "validating" and batch.metadata == {"job": "e2e"}
    done = wait_batch(client, batch.id, timeout=30.0)
    assert done.status == "completed", done
    assert done.request_counts.total == len(bodies)
    assert done.request_counts.completed == len(bodies) - 1 and done.request_counts.failed == 1
    assert done.error_file_id and done.output_file_id
    (refused,) = file_lines(client, done.error_file_id)
    assert refused["custom_id"] == f"req-{len(bodies) - 1}"
    http = httpx.Client(base_url=served.url, headers={"Authorization": f"Bearer {KEY_A}"})
    assert refused["response"]["body"] == http.post("/v1/embeddings", json=bodies[-1]).json()
    bodies = bodies[:-1]
    assert done.in_progress_at and done.finalizing_at and done.completed_at
    lines = {x["custom_id"]: x for x in file_lines(client, done.output_file_id)}
    assert set(lines) == {f"req-{i}" for i in range(len(bodies))}
    for i, body in enumerate(bodies):
        line = lines[f"req-{i}"]
        assert line["id"].startswith("batch_req_") and line["error"] is None
        assert line["response"]["status_code"] == 200 and line["response"]["request_id"]
        direct = http.post("/v1/embeddings", json=body).json()
        assert line["response"]["body"]["data"] == direct["data"]
        assert line["response"]["body"]["model"] == direct["model"]
    out = client.files.retrieve(done.output_file_id)
    assert out.purpose == "batch_output"
    # the batch and its files are the key's own
    other = _client(served, KEY_B)
    with pytest.raises(openai.NotFoundError):
        other.batches.retrieve(batch.id)
    with pytest.raises(openai.NotFoundError):
        other.batches.cancel(batch.id)
    with pytest.raises(openai.NotFoundError):
        other.files.content(done.output_file_id)
    with pytest.raises(openai.NotFoundError):
        other.batches.create(input_file_id=f.id, endpoint="/v1/embeddings", completion_window="24h")
    assert batch.id not in [b.id for b in other.batches.list()]


def test_bad_lines_are_named_and_good_lines_done(served: Served) -> None:
    client = _client(served)
    good = {"model": MV_MODEL, "input": ["fine"]}
    lines = [
        request_line("ok-1", good),
        b"{not json",
        request_line("wrong-url", good, url="/v1/chat/completions"),
        request_line("wrong-model", {"model": "no/such-model", "input": ["x"]}),
        request_line("bad-input", {"model": MV_MODEL, "input": [{"nonsense": 1}]}),
        orjson.dumps({"method": "POST", "url": "/v1/embeddings", "body": good}),
        request_line("ok-1", good),  # duplicate custom_id
        request_line("ok-2", good),
    ]
    f = client.files.create(file=("in.jsonl", b"\n".join(lines)), purpose="batch")
    batch = client.batches.create(
        input_file_id=f.id, endpoint="/v1/embeddings", completion_window="24h"
    )
    done = wait_batch(client, batch.id, timeout=30.0)
    assert done.status == "completed"
    assert done.request_counts.total == 8
    assert done.request_counts.completed == 2 and done.request_counts.failed == 6
    assert done.errors is not None
    assert sorted(e.line for e in done.errors.data) == [2, 3, 6, 7]
    by_line = {e.line: e for e in done.errors.data}
    assert by_line[3].param == "url" and "line 3" in by_line[3].message
    assert by_line[7].param == "custom_id" and "duplicate" in by_line[7].message
    outs = file_lines(client, done.output_file_id)
    assert sorted(x["custom_id"] for x in outs) == ["ok-1", "ok-2"]
    errs = file_lines(client, done.error_file_id)
    assert len(errs) == 6
    by_id = {x["custom_id"]: x for x in errs if x["custom_id"]}
    assert by_id["wrong-model"]["response"]["status_code"] == 404
    assert by_id["wrong-model"]["response"]["body"]["error"]["code"] == "model_not_found"
    assert by_id["bad-input"]["response"]["status_code"] == 400
    assert by_id["wrong-url"]["response"] is None
    assert by_id["wrong-url"]["error"]["code"] == "invalid_request"


def test_batch_of_only_bad_lines_fails(served: Served) -> None:
    client = _client(served)
    f = client.files.create(file=("in.jsonl", b"[1]\n{oops\n"), purpose="batch")
    batch = client.batches.create(
        input_file_id=f.id, endpoint="/v1/embeddings", completion_window="24h"
    )
    done = wait_batch(client, batch.id, timeout=30.0)
    assert done.status == "failed" and done.failed_at
    assert [e.line for e in done.errors.data] == [1, 2]


def test_create_validation(served: Served) -> None:
    client = _client(served)
    with pytest.raises(openai.NotFoundError):
        client.batches.create(
            input_file_id="file-nope", endpoint="/v1/embeddings", completion_window="24h"
        )
    f = client.files.create(file=("in.jsonl", request_line("a", _bodies(1)[0])), purpose="batch")
    with pytest.raises(openai.BadRequestError) as exc:
        client.batches.create(
            input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
    assert exc.value.body["param"] == "endpoint"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_nope")


def test_cancel_and_list(served: Served) -> None:
    client = _client(served)
    data = b"\n".join(request_line(f"c{i}", b) for i, b in enumerate(_bodies(400)))
    f = client.files.create(file=("big.jsonl", data), purpose="batch")
    batch = client.batches.create(
        input_file_id=f.id, endpoint="/v1/embeddings", completion_window="24h"
    )
    cancelling = client.batches.cancel(batch.id)
    assert cancelling.status in ("cancelling", "cancelled")
    done = wait_batch(client, batch.id, timeout=30.0)
    assert done.status == "cancelled" and done.cancelled_at and done.cancelling_at
    assert done.request_counts.completed < 400
    if done.output_file_id:
        assert len(file_lines(client, done.output_file_id)) == done.request_counts.completed
    # cancelling a finished batch changes nothing
    assert client.batches.cancel(batch.id).status == "cancelled"
    # list: newest first, cursor pagination
    ids = [b.id for b in client.batches.list(limit=100).data]
    assert ids[0] == batch.id and len(ids) >= 3
    page = client.batches.list(limit=2)
    assert [b.id for b in page.data] == ids[:2] and page.has_more
    after = client.batches.list(limit=2, after=ids[1])
    assert [b.id for b in after.data] == ids[2:4]
    assert [b.id for b in client.batches.list(limit=1)] == ids


def test_readme_example_runs(served: Served) -> None:
    """The README's "Batch API" example, end to end against this server."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("### Batch API") :]
    code = section[section.index("```python\n") + 10 : section.index("```\n", 10)]
    code = (
        code.replace("http://localhost:8888", served.url)
        .replace('"sk-..."', repr(KEY_A))
        .replace("sentence-transformers/all-MiniLM-L6-v2", MV_MODEL)
        .replace("time.sleep(1)", "time.sleep(0.05)")
    )
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102
    assert scope["batch"].status == "completed"
    assert scope["batch"].request_counts.completed == 2
    assert scope["vector"] and scope["out"]["custom_id"] == "doc-1"


WINDOW = 16  # lines a window in the restart tests (small: a batch of 120 is many windows)


@pytest.fixture
def small_windows(monkeypatch) -> None:
    monkeypatch.setattr("app.batches.WINDOW_LINES", WINDOW)


def _stopped_mid_batch(tmp_path: Path, n: int):
    """A batch of ``n`` lines on a server stopped after its first windows: (handle, settings,
    batch id)."""
    from app.redis_embedded import start_fakeredis

    handle = start_fakeredis()
    settings = dataclasses.replace(
        MV_SETTINGS, api_keys=(KEY_A,), data_dir=tmp_path, cache=False, queue_threshold=100
    )
    first, thread, adapter = _start(settings, handle)
    client = _client(first)
    data = b"\n".join(request_line(f"r{i}", b) for i, b in enumerate(_bodies(n)))
    f = client.files.create(file=("in.jsonl", data), purpose="batch")
    batch = client.batches.create(
        input_file_id=f.id, endpoint="/v1/embeddings", completion_window="24h"
    )
    deadline = time.time() + 30
    while client.batches.retrieve(batch.id).request_counts.completed < 2 * WINDOW:
        assert time.time() < deadline
        time.sleep(0.02)
    thread.stop()  # type: ignore[attr-defined]
    return handle, settings, batch.id, adapter


def _start(settings, handle) -> tuple[Served, object, FakeAdapter]:
    adapter = FakeAdapter(
        kind="multi_vector", name=MV_MODEL, dim=8, max_tokens=16, forward_delay=0.02
    )
    served, thread, _ = serve_with_jobs(settings, adapter, handle)
    return served, thread, adapter


def test_server_restart_mid_batch_resumes_without_redoing_lines(tmp_path, small_windows) -> None:
    """Stop the server mid-batch; a new server on the same Redis and data dir finishes it:
    every line exactly once in the output, and no line forwarded twice beyond the windows
    that were in flight (DEPTH of them), run as jobs by the servers' local workers."""
    from app.batches import DEPTH

    n = 120
    handle, settings, batch_id, adapter_a = _stopped_mid_batch(tmp_path, n)
    second, thread, adapter_b = _start(settings, handle)
    try:
        client = _client(second)
        assert client.batches.retrieve(batch_id).status == "in_progress"
        done = wait_batch(client, batch_id, timeout=30.0)
        assert done.status == "completed"
        assert done.request_counts.completed == n and done.request_counts.failed == 0
        ids = [x["custom_id"] for x in file_lines(client, done.output_file_id)]
        assert sorted(ids) == sorted(f"r{i}" for i in range(n))  # each line exactly once
        forwarded = sum(adapter_a.batches) + sum(adapter_b.batches)
        assert 2 * n <= forwarded <= 2 * (n + DEPTH * WINDOW)
        assert sum(adapter_b.batches) < 2 * n  # the second server did not start over
    finally:
        thread.stop()  # type: ignore[attr-defined]


def test_an_expired_batch_keeps_its_done_lines_and_fails_the_rest(tmp_path, small_windows) -> None:
    from app.batches import batch_key

    n = 120
    handle, settings, batch_id, _ = _stopped_mid_batch(tmp_path, n)
    r = handle.sync_client()
    rec = orjson.loads(r.get(batch_key(batch_id)))
    rec["batch"]["expires_at"] = int(time.time()) - 1  # its 24 hours are up
    r.set(batch_key(batch_id), orjson.dumps(rec))
    second, thread, _ = _start(settings, handle)
    try:
        client = _client(second)
        done = wait_batch(client, batch_id, timeout=30.0)
        assert done.status == "expired" and done.expired_at
        counts = done.request_counts
        assert counts.total == n and counts.completed >= 16
        assert counts.completed + counts.failed == n
        assert len(file_lines(client, done.output_file_id)) == counts.completed
        errs = file_lines(client, done.error_file_id)
        assert len(errs) == counts.failed
        assert {e["error"]["code"] for e in errs} == {"batch_expired"}
    finally:
        thread.stop()  # type: ignore[attr-defined]
