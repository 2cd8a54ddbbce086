"""/v1/rerank, /v1/score and pooling on the real models (tiny ColQwen2.5, all-MiniLM-L6-v2)
through an in-process server: MaxSim equals numpy over /v1/embeddings vectors (and
colpali-engine's scores on the goldens), cosine equals sentence-transformers' ``cos_sim`` on
the MiniLM goldens, pooling through the endpoint equals app.pooling / the ingest schema."""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from app.engine import load_engine
from app.ingest.pooling import mean_pool_rows_columns, unit_rows
from app.pooling import hierarchical_pool
from app.settings import Settings

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS / "http"))
from http_servers import serve  # noqa: E402

GOLDENS = TESTS / "goldens"
COLQWEN = json.loads((GOLDENS / "colqwen_reference.json").read_text())
QUERIES = {i["name"]: i["text"] for i in COLQWEN["items"] if i["kind"] == "query"}


def _url(path: Path) -> Iterator[str]:
    """A server on its own engine: stopping the server closes its engine, so the session's
    shared engines must not be used here."""
    engine = load_engine(Settings(model=str(path)))
    engine.wait_ready(120)
    settings = Settings(model=str(path), served_model_name="m", blas="off")
    served, thread = serve(settings, None, engine=engine)  # type: ignore[arg-type]
    try:
        yield served.url
    finally:
        thread.stop()
        engine.close()


@pytest.fixture(scope="module")
def colqwen_url() -> Iterator[str]:
    """The goldens' tiny ColQwen2.5 (the one colpali-engine scored)."""
    yield from _url(GOLDENS / "tiny-colqwen2.5")


@pytest.fixture(scope="module")
def minilm_url(minilm_path: Path) -> Iterator[str]:
    yield from _url(minilm_path)


def _image(name: str) -> dict:
    data = base64.b64encode((GOLDENS / "images" / f"{name}.png").read_bytes()).decode()
    return {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{data}"}}


def post(url: str, path: str, body: dict) -> dict:
    r = httpx.post(url + path, json={"model": "m", **body}, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()


def embed(url: str, inputs: list, input_type: str, **kw) -> list[dict]:
    body = {"input": inputs, "input_type": input_type, "encoding_format": "float", **kw}
    return post(url, "/v1/embeddings", body)["data"]


def test_colqwen_rerank_equals_maxsim_over_embeddings(colqwen_url: str) -> None:
    pages = list(COLQWEN["score_cols"])
    docs = [_image(p) for p in pages]
    page_vecs = [
        np.asarray(d["embedding"], np.float32) for d in embed(colqwen_url, docs, "document")
    ]
    ref = np.load(GOLDENS / "colqwen_reference.npz")["scores"]
    for qi, name in enumerate(COLQWEN["score_rows"]):
        text = QUERIES[name]
        body = post(colqwen_url, "/v1/rerank", {"query": text, "documents": docs, "top_n": 4})
        [q] = embed(colqwen_url, [text], "query")
        qv = np.asarray(q["embedding"], np.float32)
        want = np.array([np.einsum("qd,td->qt", qv, p).max(axis=1).sum() for p in page_vecs])
        got = {x["index"]: x["relevance_score"] for x in body["results"]}
        assert list(got) == list(np.argsort(-want, kind="stable")[:4])
        for i, s in got.items():
            assert s == pytest.approx(want[i], abs=1e-5)
            assert s == pytest.approx(ref[qi, i], abs=1e-3)  # colpali-engine's score
        scored = post(colqwen_url, "/v1/score", {"text_1": text, "text_2": docs})["data"]
        np.testing.assert_allclose([x["score"] for x in scored], want, atol=1e-5)


def test_colqwen_text_documents_and_pairwise_score(colqwen_url: str) -> None:
    texts = list(QUERIES.values())[:3]
    docs = ["a revenue chart", _image("tall_text"), "invoice 4521 total"]
    body = post(colqwen_url, "/v1/score", {"text_1": texts, "text_2": docs})
    qs = [np.asarray(d["embedding"], np.float32) for d in embed(colqwen_url, texts, "query")]
    ds = [np.asarray(d["embedding"], np.float32) for d in embed(colqwen_url, docs, "document")]
    for x, q, d in zip(body["data"], qs, ds, strict=True):
        assert x["score"] == pytest.approx(float((q @ d.T).max(axis=1).sum()), abs=1e-5)


def test_minilm_score_equals_st_cos_sim_on_goldens(minilm_url: str) -> None:
    ref = np.load(GOLDENS / "minilm_reference.npz")
    info = json.loads((GOLDENS / "minilm_reference.json").read_text())
    keep = [i for i, s in enumerate(info["sentences"]) if not s.get("truncated")][:12]
    sentences = [str(ref["sentences"][i]) for i in keep]
    emb = ref["embeddings"][keep].astype(np.float64)
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    cos_sim = unit @ unit.T  # sentence-transformers' util.cos_sim
    body = post(minilm_url, "/v1/score", {"text_1": sentences[0], "text_2": sentences[1:]})
    np.testing.assert_allclose([x["score"] for x in body["data"]], cos_sim[0, 1:], atol=1e-5)
    rr = post(minilm_url, "/v1/rerank", {"query": sentences[0], "documents": sentences[1:]})
    order = [x["index"] for x in rr["results"]]
    assert order == list(np.argsort(-cos_sim[0, 1:], kind="stable"))


def test_colqwen_pooling_through_the_endpoint(colqwen_url: str) -> None:
    docs = [_image("wide_shapes"), _image("square_gradient")]
    plain = embed(colqwen_url, docs, "document")
    rows_cols = embed(colqwen_url, docs, "document", pooling={"method": "rows_cols"})
    hier = embed(colqwen_url, docs, "document",
                 pooling={"method": "hierarchical", "pool_factor": 3})  # fmt: skip
    for p, rc, h in zip(plain, rows_cols, hier, strict=True):
        v = np.asarray(p["embedding"], np.float32)
        rows, cols = mean_pool_rows_columns(v, p["image_grid"], p["image_token_span"])
        np.testing.assert_array_equal(np.asarray(rc["embedding"], np.float32), v)
        np.testing.assert_allclose(rc["pooled_rows"], unit_rows(rows), atol=1e-6)
        np.testing.assert_allclose(rc["pooled_columns"], unit_rows(cols), atol=1e-6)
        pooled = np.asarray(h["embedding"], np.float32)
        np.testing.assert_allclose(pooled, hierarchical_pool(v, 3), atol=1e-6)
        assert h["shape"] == [len(pooled), 128] and len(pooled) <= len(v) // 3


def test_rows_cols_of_a_text_is_400(colqwen_url: str) -> None:
    body = {"model": "m", "input": "a", "pooling": {"method": "rows_cols"}}
    r = httpx.post(colqwen_url + "/v1/embeddings", timeout=60, json=body)
    assert r.status_code == 400 and r.json()["error"]["param"] == "pooling"
