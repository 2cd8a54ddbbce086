"""/v1/rerank, /v1/score and the new /v1/embeddings options (embedding_type, pooling) on the
fake models through the real server: scores equal numpy over /v1/embeddings vectors, ordering,
top_n, ties, the cache, and a 400 with ``param`` for every bad value."""

from __future__ import annotations

import base64
import io
import time

import httpx
import numpy as np
import pytest
from http_servers import MV_MODEL, MV_SETTINGS, POOLED_MODEL, FakeAdapter, Served, serve
from PIL import Image

from app.backends import Backends
from app.encoding import decode_typed_base64
from app.ingest.pooling import mean_pool_rows_columns, unit_rows
from app.pooling import hierarchical_pool
from app.redis_embedded import start_fakeredis


def _png_uri(seed: int, size: tuple[int, int] = (32, 24)) -> str:
    rng = np.random.default_rng(seed)
    im = Image.fromarray((rng.random((size[1], size[0], 3)) * 255).astype("uint8"))
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _image(seed: int) -> dict:
    return {"type": "image_url", "image_url": {"url": _png_uri(seed)}}


def post(served: Served, path: str, body: dict, **kw) -> httpx.Response:
    with served.client() as c:
        return c.post(path, json=body, **kw)


def vectors(served: Served, inputs: list, input_type: str, **extra) -> list[np.ndarray]:
    body = {"model": served.model, "input": inputs, "input_type": input_type, **extra}
    r = post(served, "/v1/embeddings", body)
    assert r.status_code == 200, r.text
    return [np.asarray(d["embedding"], dtype=np.float32) for d in r.json()["data"]]


def numpy_maxsim(q: np.ndarray, d: np.ndarray) -> float:
    return float(np.einsum("qd,td->qt", q, d).max(axis=1).sum())


@pytest.fixture(scope="module")
def cached_server():
    adapter = FakeAdapter(kind="multi_vector", name=MV_MODEL, dim=8, max_tokens=16)
    settings = MV_SETTINGS.__class__(**{**MV_SETTINGS.__dict__, "queue_threshold": 3})
    backends = Backends(settings, start_fakeredis())
    served, thread = serve(settings, adapter, backends=backends)
    deadline = time.time() + 10
    while backends.jobs is None and time.time() < deadline:
        time.sleep(0.02)
    yield served
    thread.stop()


def test_rerank_scores_are_maxsim_over_embeddings(mv_server: Served) -> None:
    docs = ["alpha beta", "gamma", _image(1), "alpha delta epsilon", _image(2)]
    r = post(mv_server, "/v1/rerank", {"model": mv_server.model, "query": "alpha gamma",
                                       "documents": docs})  # fmt: skip
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "rerank" and body["model"] == mv_server.model
    [q] = vectors(mv_server, ["alpha gamma"], "query")
    d = vectors(mv_server, docs, "document")
    want = [numpy_maxsim(q, x) for x in d]
    results = body["results"]
    assert [x["index"] for x in results] == sorted(range(5), key=lambda i: -want[i])
    for x in results:
        assert x["relevance_score"] == pytest.approx(want[x["index"]], abs=1e-5)
        assert "document" not in x
    tokens = len(q) + sum(len(x) for x in d)
    assert body["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}


def test_rerank_top_n_return_documents_and_ties(mv_server: Served) -> None:
    docs = ["same words", "other", "same words", {"type": "text", "text": "same words"}]
    r = post(mv_server, "/v1/rerank", {"model": mv_server.model, "query": "same words",
                                       "documents": docs, "top_n": 3,
                                       "return_documents": True})  # fmt: skip
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["index"] for x in results] == [0, 2, 3]  # equal scores keep the documents' order
    assert len({x["relevance_score"] for x in results}) == 1
    assert results[0]["document"] == {"text": "same words"}
    assert results[2]["document"] == {"type": "text", "text": "same words"}
    r = post(mv_server, "/rerank", {"model": mv_server.model, "query": "x", "documents": ["a"],
                                    "top_n": 10})  # fmt: skip
    assert r.status_code == 200 and len(r.json()["results"]) == 1


def test_score_one_to_many_and_pairwise(mv_server: Served) -> None:
    texts = ["alpha beta", "beta gamma", _image(3)]
    r = post(mv_server, "/v1/score", {"model": mv_server.model, "text_1": "alpha",
                                      "text_2": texts})  # fmt: skip
    assert r.status_code == 200, r.text
    [q] = vectors(mv_server, ["alpha"], "query")
    d = vectors(mv_server, texts, "document")
    data = r.json()["data"]
    assert [x["index"] for x in data] == [0, 1, 2] and data[0]["object"] == "score"
    for x in data:
        assert x["score"] == pytest.approx(numpy_maxsim(q, d[x["index"]]), abs=1e-5)
    left = ["alpha", "gamma", "beta"]
    r = post(mv_server, "/v1/score", {"model": mv_server.model, "text_1": left, "text_2": texts})
    assert r.status_code == 200, r.text
    qs = vectors(mv_server, left, "query")
    for x, a, b in zip(r.json()["data"], qs, d, strict=True):
        assert x["score"] == pytest.approx(numpy_maxsim(a, b), abs=1e-5)


def test_pooled_model_scores_with_cosine(pooled_server: Served) -> None:
    docs = ["one two", "three", "one"]
    r = post(pooled_server, "/v1/rerank", {"model": pooled_server.model, "query": "one",
                                           "documents": docs})  # fmt: skip
    assert r.status_code == 200, r.text
    [q] = vectors(pooled_server, ["one"], "query")
    d = vectors(pooled_server, docs, "document")
    for x in r.json()["results"]:
        v = d[x["index"]]
        want = float(v @ q / (np.linalg.norm(v) * np.linalg.norm(q)))
        assert x["relevance_score"] == pytest.approx(want, abs=1e-5)


def test_repeat_rerank_is_a_cache_hit_without_forward(cached_server: Served) -> None:
    served = cached_server
    adapter: FakeAdapter = served.adapter
    body = {"model": served.model, "query": "pages", "documents": [_image(i) for i in range(3)]}
    first = post(served, "/v1/rerank", body)
    assert first.status_code == 200, first.text
    assert first.headers["x-cache"] == "miss"
    seen = len(adapter.seen)
    second = post(served, "/v1/rerank", body)
    assert second.headers["x-cache"] == "hit"
    assert len(adapter.seen) == seen
    assert second.json()["results"] == first.json()["results"]


def test_many_pages_go_through_a_job(cached_server: Served) -> None:
    body = {"model": cached_server.model, "query": "q",
            "documents": [_image(100 + i) for i in range(6)]}  # fmt: skip
    r = post(cached_server, "/v1/rerank", body)
    assert r.status_code == 200, r.text
    assert r.headers.get("x-lane") == "job"
    assert sorted(x["index"] for x in r.json()["results"]) == list(range(6))


@pytest.mark.parametrize("kind", ["float16", "int8", "uint8", "binary", "ubinary"])
def test_embedding_type_over_http(mv_server: Served, kind: str) -> None:
    inputs = ["alpha beta gamma", _image(7)]
    floats = vectors(mv_server, inputs, "document")
    for fmt in ("float", "base64"):
        body = {"model": mv_server.model, "input": inputs, "input_type": "document",
                "embedding_type": kind, "encoding_format": fmt}  # fmt: skip
        r = post(mv_server, "/v1/embeddings", body)
        assert r.status_code == 200, r.text
        for item, f in zip(r.json()["data"], floats, strict=True):
            assert item["embedding_type"] == kind
            width = 1 if "binary" in kind else 8
            assert item["shape"] == [len(f), width]
            got = item["embedding"]
            arr = decode_typed_base64(got, kind, item["shape"]) if fmt == "base64" else got
            arr = np.asarray(arr)
            if kind == "int8":
                np.testing.assert_array_equal(arr, np.rint(f * 127))
            elif kind == "ubinary":
                np.testing.assert_array_equal(arr, np.packbits(f > 0, axis=-1))
            elif kind == "float16":
                np.testing.assert_allclose(arr, f, atol=1e-3)


def test_pooling_option(mv_server: Served) -> None:
    image = _image(9)
    body = {"model": mv_server.model, "input": [image], "encoding_format": "float"}
    plain = post(mv_server, "/v1/embeddings", body).json()["data"][0]
    original = np.asarray(plain["embedding"], dtype=np.float32)
    r = post(mv_server, "/v1/embeddings", {**body, "pooling": {"method": "rows_cols"}})
    assert r.status_code == 200, r.text
    item = r.json()["data"][0]
    np.testing.assert_array_equal(np.asarray(item["embedding"], dtype=np.float32), original)
    rows, cols = mean_pool_rows_columns(original, plain["image_grid"], plain["image_token_span"])
    np.testing.assert_allclose(item["pooled_rows"], unit_rows(rows), atol=1e-6)
    np.testing.assert_allclose(item["pooled_columns"], unit_rows(cols), atol=1e-6)
    assert item["pooled_rows_shape"] == [2, 8] and item["pooled_columns_shape"] == [3, 8]
    r = post(mv_server, "/v1/embeddings",
             {**body, "input": ["a b c d e f g h", image],
              "pooling": {"method": "hierarchical", "pool_factor": 2}})  # fmt: skip
    assert r.status_code == 200, r.text
    text_vec = vectors(mv_server, ["a b c d e f g h"], "query")[0]
    got = [np.asarray(d["embedding"], dtype=np.float32) for d in r.json()["data"]]
    np.testing.assert_allclose(got[0], hierarchical_pool(text_vec, 2), atol=1e-6)
    np.testing.assert_allclose(got[1], hierarchical_pool(original, 2), atol=1e-6)
    assert r.json()["data"][1]["pooled_from"] == 6 and r.json()["data"][1]["shape"] == [3, 8]
    both = {**body, "pooling": {"method": "rows_cols", "pool_factor": 2}}
    item = post(mv_server, "/v1/embeddings", both).json()["data"][0]
    np.testing.assert_allclose(item["embedding"], hierarchical_pool(original, 2), atol=1e-6)
    np.testing.assert_allclose(item["pooled_rows"], unit_rows(rows), atol=1e-6)
    assert item["image_token_span"] == plain["image_token_span"] and item["pooled_from"] == 6


def test_pooled_vectors_are_cached_under_their_own_key(cached_server: Served) -> None:
    served, adapter = cached_server, cached_server.adapter
    body = {"model": served.model, "input": [_image(40)], "encoding_format": "base64"}
    assert post(served, "/v1/embeddings", body).headers["x-cache"] == "miss"
    pooled = {**body, "pooling": {"method": "hierarchical", "pool_factor": 2}}
    first = post(served, "/v1/embeddings", pooled)
    assert first.status_code == 200, first.text
    seen = len(adapter.seen)
    second = post(served, "/v1/embeddings", pooled)
    assert second.headers["x-cache"] == "hit" and len(adapter.seen) == seen
    assert second.json()["data"] == first.json()["data"]
    other = post(served, "/v1/embeddings", {**body, "pooling": {"method": "rows_cols"}})
    assert other.status_code == 200 and "pooled_rows" in other.json()["data"][0]
    assert post(served, "/v1/embeddings", body).json()["data"][0]["shape"] == [6, 8]


BAD = [
    ("/v1/rerank", {"query": "q", "documents": []}, "documents"),
    ("/v1/rerank", {"query": "q", "documents": "not a list"}, "documents"),
    ("/v1/rerank", {"documents": ["a"]}, "query"),
    ("/v1/rerank", {"query": "q", "documents": ["a"], "top_n": 0}, "top_n"),
    ("/v1/rerank", {"query": "q", "documents": ["a"], "top_n": "3"}, "top_n"),
    ("/v1/rerank", {"query": "q", "documents": ["a"], "return_documents": "yes"},
     "return_documents"),
    ("/v1/rerank", {"query": "q", "documents": ["a", {"type": "nope"}]}, "documents[1].type"),
    ("/v1/rerank", {"query": {"type": "image_url"}, "documents": ["a"]}, "query.image_url"),
    ("/v1/score", {"text_1": ["a", "b"], "text_2": ["a", "b", "c"]}, "text_2"),
    ("/v1/score", {"text_1": [], "text_2": ["a"]}, "text_1"),
    ("/v1/score", {"text_1": "a"}, "text_2"),
    ("/v1/embeddings", {"input": "a", "embedding_type": "int4"}, "embedding_type"),
    ("/v1/embeddings", {"input": "a", "pooling": {"method": "kmeans"}}, "pooling.method"),
    ("/v1/embeddings", {"input": "a", "pooling": "hierarchical"}, "pooling"),
    ("/v1/embeddings", {"input": "a", "pooling": {"method": "hierarchical", "pool_factor": 0}},
     "pooling.pool_factor"),
    ("/v1/embeddings", {"input": "a", "pooling": {"method": "hierarchical", "pool_factor": 2.5}},
     "pooling.pool_factor"),
    ("/v1/embeddings", {"input": "a", "pooling": {"method": "rows_cols", "pool_factor": 65}},
     "pooling.pool_factor"),
    ("/v1/embeddings", {"input": "a", "pooling": {"method": "rows_cols", "size": 2}},
     "pooling.size"),
    ("/v1/embeddings", {"input": "a b", "pooling": {"method": "rows_cols"}}, "pooling"),
]  # fmt: skip


@pytest.mark.parametrize(("path", "body", "param"), BAD)
def test_bad_values_are_400_with_param(mv_server: Served, path: str, body: dict, param) -> None:
    r = post(mv_server, path, {"model": mv_server.model, **body})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param, r.text
    assert r.json()["error"]["type"] == "invalid_request_error"


def test_pooling_on_a_pooled_model_is_400(pooled_server: Served) -> None:
    r = post(pooled_server, "/v1/embeddings", {"model": POOLED_MODEL, "input": "a",
                                               "pooling": {"method": "hierarchical"}})  # fmt: skip
    assert r.status_code == 400 and r.json()["error"]["param"] == "pooling"


def test_unknown_model_is_404(mv_server: Served) -> None:
    r = post(mv_server, "/v1/rerank", {"model": "nope", "query": "q", "documents": ["a"]})
    assert r.status_code == 404 and r.json()["error"]["param"] == "model"


def test_pooling_a_repeated_input(cached_server: Served) -> None:
    image = _image(41)
    body = {"model": cached_server.model, "input": [image, "t u v w", image],
            "pooling": {"method": "hierarchical", "pool_factor": 2}}  # fmt: skip
    r = post(cached_server, "/v1/embeddings", body)
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert len(data) == 3 and data[0]["embedding"] == data[2]["embedding"]
    again = post(cached_server, "/v1/embeddings", body)
    assert again.headers["x-cache"] == "hit" and again.json()["data"] == data
