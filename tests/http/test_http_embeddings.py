"""POST /v1/embeddings over a real socket: shapes, encodings, usage, batching (fake adapter)."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import io
import time

import httpx
import numpy as np
import pytest
from fake_adapter import FAIL_MARKER
from http_servers import MV_MODEL, MV_SETTINGS, POOLED_MODEL, Served
from PIL import Image

from app.encoding import decode_base64
from app.protocol import EmbeddingResponse


def post(served: Served, body: dict, path: str = "/v1/embeddings", **kw) -> httpx.Response:
    with served.client() as client:
        return client.post(path, json=body, **kw)


def png_data_uri(color: tuple[int, int, int] = (200, 30, 30), size=(32, 24)) -> str:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


# ---- multi-vector ------------------------------------------------------------------------------


def test_single_string_is_one_multi_vector_item(mv_server: Served) -> None:
    r = post(mv_server, {"model": MV_MODEL, "input": "three small words"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert "x-cache" in r.headers
    body = EmbeddingResponse.model_validate(r.json())
    assert body.object == "list" and body.model == MV_MODEL
    [item] = body.data
    assert item.object == "embedding" and item.index == 0
    assert item.shape == [3, 8]
    arr = np.asarray(item.embedding, dtype=np.float32)
    assert arr.shape == (3, 8)
    np.testing.assert_allclose(np.linalg.norm(arr, axis=1), 1.0, rtol=1e-5)
    assert body.usage.prompt_tokens == body.usage.total_tokens == 3


def test_batch_keeps_order_and_has_no_padding_rows(mv_server: Served) -> None:
    texts = ["one", "one two three four five", "one two"]
    r = post(mv_server, {"model": MV_MODEL, "input": texts})
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert [d["index"] for d in data] == [0, 1, 2]
    # each item has exactly its own token count of rows: no padding from the batch
    assert [len(d["embedding"]) for d in data] == [1, 5, 2]
    assert [d["shape"] for d in data] == [[1, 8], [5, 8], [2, 8]]
    assert r.json()["usage"] == {"prompt_tokens": 8, "total_tokens": 8}
    # the same token gives the same vector whatever the batch: item 0 == first row of item 1
    np.testing.assert_array_equal(data[0]["embedding"][0], data[1]["embedding"][0])
    alone = post(mv_server, {"model": MV_MODEL, "input": "one two"}).json()["data"][0]
    assert alone["embedding"] == data[2]["embedding"]


def test_base64_is_little_endian_float32_with_shape(mv_server: Served) -> None:
    body = {"model": MV_MODEL, "input": ["alpha beta", "gamma"]}
    floats = post(mv_server, body).json()["data"]
    b64 = post(mv_server, {**body, "encoding_format": "base64"}).json()["data"]
    for f, b in zip(floats, b64, strict=True):
        assert isinstance(b["embedding"], str)
        assert b["shape"] == f["shape"]
        raw = base64.b64decode(b["embedding"])
        assert len(raw) == 4 * f["shape"][0] * f["shape"][1]
        arr = np.frombuffer(raw, dtype="<f4").reshape(b["shape"])
        np.testing.assert_array_equal(arr, np.asarray(f["embedding"], dtype=np.float32))
        np.testing.assert_array_equal(decode_base64(b["embedding"], b["shape"]), arr)


def test_openai_client_default_base64_gets_all_token_vectors(mv_server: Served) -> None:
    client = mv_server.openai()
    texts = ["the quick brown fox", "jumps"]
    default = client.embeddings.create(model=MV_MODEL, input=texts)  # asks for base64
    as_float = client.embeddings.create(model=MV_MODEL, input=texts, encoding_format="float")
    assert default.usage.prompt_tokens == as_float.usage.prompt_tokens == 5
    for d, f, n in zip(default.data, as_float.data, [4, 1], strict=True):
        flat = np.asarray(d.embedding, dtype=np.float32)
        assert flat.shape == (n * 8,)  # n_tokens x dim floats, flattened row-major
        np.testing.assert_array_equal(flat, np.asarray(f.embedding, dtype=np.float32).ravel())
        assert d.model_extra["shape"] == [n, 8]


def test_token_id_inputs(make_server) -> None:
    mv_server = make_server(dataclasses.replace(MV_SETTINGS, token_ids="model"))
    one = post(mv_server, {"model": MV_MODEL, "input": [5, 6, 7]})
    assert one.status_code == 200, one.text
    assert [d["shape"] for d in one.json()["data"]] == [[3, 8]]
    many = post(mv_server, {"model": MV_MODEL, "input": [[5, 6, 7], [9]]})
    assert many.status_code == 200, many.text
    assert [d["shape"] for d in many.json()["data"]] == [[3, 8], [1, 8]]
    assert many.json()["usage"]["prompt_tokens"] == 4


def test_image_input_counts_image_tokens_and_reports_extras(mv_server: Served) -> None:
    parts = [
        "a query",
        {"type": "image_url", "image_url": {"url": png_data_uri()}},
    ]
    r = post(mv_server, {"model": MV_MODEL, "input": parts})
    assert r.status_code == 200, r.text
    text, image = r.json()["data"]
    assert text["shape"] == [2, 8]
    assert image["shape"] == [6, 8]
    assert image["image_grid"] == [2, 3] and image["image_token_span"] == [0, 6]
    assert r.json()["usage"]["prompt_tokens"] == 8


def test_truncate_cuts_long_input_to_the_cap(mv_server: Served) -> None:
    words = " ".join(f"w{i}" for i in range(30))
    r = post(mv_server, {"model": MV_MODEL, "input": words, "truncate": True})
    assert r.status_code == 200, r.text
    assert r.json()["data"][0]["shape"] == [16, 8]
    assert r.json()["usage"]["prompt_tokens"] == 16


def test_dimensions_equal_to_model_dim_is_a_no_op(mv_server: Served) -> None:
    a = post(mv_server, {"model": MV_MODEL, "input": "x y"}).json()
    b = post(mv_server, {"model": MV_MODEL, "input": "x y", "dimensions": 8}).json()
    assert a["data"] == b["data"]


def test_unknown_fields_and_user_are_ignored_and_unprefixed_path_works(mv_server: Served) -> None:
    body = {"model": MV_MODEL, "input": "x", "user": "u-1", "something_new": {"a": 1}}
    r = post(mv_server, body, path="/embeddings")
    assert r.status_code == 200, r.text
    assert r.json()["data"][0]["shape"] == [1, 8]


def test_without_redis_the_cache_is_off(mv_server: Served) -> None:
    for headers in ({}, {"Cache-Control": "no-cache"}):
        r = post(mv_server, {"model": MV_MODEL, "input": "x"}, headers=headers)
        assert r.status_code == 200
        assert r.headers["x-cache"] == "off"


# ---- pooled ------------------------------------------------------------------------------------


def test_pooled_items_are_flat_vectors(pooled_server: Served) -> None:
    r = post(pooled_server, {"model": POOLED_MODEL, "input": ["hello there", "x"]})
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert all("shape" not in d for d in data)
    vecs = np.asarray([d["embedding"] for d in data], dtype=np.float32)
    assert vecs.shape == (2, 16)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, rtol=1e-5)
    assert r.json()["usage"]["prompt_tokens"] == 3


def test_pooled_openai_client_base64_equals_float(pooled_server: Served) -> None:
    client = pooled_server.openai()
    a = client.embeddings.create(model=POOLED_MODEL, input=["hello there"])
    b = client.embeddings.create(model=POOLED_MODEL, input=["hello there"], encoding_format="float")
    assert len(a.data[0].embedding) == 16
    np.testing.assert_array_equal(
        np.asarray(a.data[0].embedding, np.float32), np.asarray(b.data[0].embedding, np.float32)
    )


def test_matryoshka_dimensions_truncate_and_renormalise(pooled_server: Served) -> None:
    full = post(pooled_server, {"model": POOLED_MODEL, "input": "a b c"}).json()["data"][0]
    r = post(pooled_server, {"model": POOLED_MODEL, "input": "a b c", "dimensions": 4})
    assert r.status_code == 200, r.text
    short = np.asarray(r.json()["data"][0]["embedding"], dtype=np.float32)
    assert short.shape == (4,)
    expected = np.asarray(full["embedding"][:4], dtype=np.float32)
    np.testing.assert_allclose(short, expected / np.linalg.norm(expected), rtol=1e-5)


# ---- batching ----------------------------------------------------------------------------------


def test_lone_request_does_not_wait_for_a_batch(mv_server: Served) -> None:
    # max_wait_ms is 1000 on this server: a lone request must not sit out that window.
    post(mv_server, {"model": MV_MODEL, "input": "warm up"})
    timings = []
    for _ in range(3):
        start = time.perf_counter()
        r = post(mv_server, {"model": MV_MODEL, "input": "just me"})
        timings.append(time.perf_counter() - start)
        assert r.status_code == 200
    assert min(timings) < 0.25, timings


async def _concurrent(url: str, bodies: list[dict]) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        return await asyncio.gather(*(client.post("/v1/embeddings", json=b) for b in bodies))


def test_one_bad_request_in_a_batch_fails_alone(make_server) -> None:
    from fake_adapter import FakeAdapter
    from http_servers import MV_SETTINGS

    adapter = FakeAdapter(name=MV_MODEL, dim=8, max_tokens=16, forward_delay=0.05)
    served = make_server(MV_SETTINGS, adapter)
    bodies = [{"model": MV_MODEL, "input": f"good request {i}"} for i in range(12)]
    bodies.insert(5, {"model": MV_MODEL, "input": f"bad {FAIL_MARKER} one"})
    responses = asyncio.run(_concurrent(served.url, bodies))
    statuses = [r.status_code for r in responses]
    assert statuses[5] == 500, responses[5].text
    assert responses[5].json()["error"]["type"] == "server_error"
    assert statuses[:5] + statuses[6:] == [200] * 12
    for body, r in zip(bodies, responses, strict=True):
        if r.status_code == 200:
            assert r.json()["data"][0]["shape"] == [len(body["input"].split()), 8]
    assert max(adapter.batches) > 1, adapter.batches  # requests really shared batches
    assert adapter.threads == {"mlx-engine"}


@pytest.mark.parametrize("n_clients", [16])
def test_concurrent_clients_get_their_own_results(mv_server: Served, n_clients: int) -> None:
    bodies = [
        {"model": MV_MODEL, "input": [f"client {i}", "shared words"]} for i in range(n_clients)
    ]
    responses = asyncio.run(_concurrent(mv_server.url, bodies))
    shared = None
    for i, r in enumerate(responses):
        assert r.status_code == 200, r.text
        first, second = r.json()["data"]
        assert first["embedding"] == post(mv_server, bodies[i]).json()["data"][0]["embedding"]
        shared = shared or second["embedding"]
        assert second["embedding"] == shared


def test_client_disconnect_drops_the_queued_request(make_server) -> None:
    import socket

    from fake_adapter import FakeAdapter
    from http_servers import MV_SETTINGS

    adapter = FakeAdapter(name=MV_MODEL, dim=8, max_tokens=16, forward_delay=0.4)
    served = make_server(MV_SETTINGS, adapter)

    async def scenario() -> int:
        async with httpx.AsyncClient(base_url=served.url, timeout=30) as client:
            busy = asyncio.create_task(
                client.post("/v1/embeddings", json={"model": MV_MODEL, "input": "keeps busy"})
            )
            await asyncio.sleep(0.1)  # the engine is now inside the slow forward
            payload = b'{"model": "%s", "input": "abandoned words"}' % MV_MODEL.encode()
            sock = socket.create_connection(("127.0.0.1", int(served.url.rsplit(":", 1)[1])))
            sock.sendall(
                b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                b"\r\nContent-Length: %d\r\n\r\n%s" % (len(payload), payload)
            )
            await asyncio.sleep(0.1)  # queued behind the busy batch
            sock.close()  # the client goes away
            return (await busy).status_code

    assert asyncio.run(scenario()) == 200
    time.sleep(0.8)  # give the engine time to reach (and skip) the abandoned request
    assert "tok:keeps" in adapter.seen
    assert "tok:abandoned" not in adapter.seen, adapter.seen
