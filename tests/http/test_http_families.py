"""The families added last over HTTP with the openai client, on the tiny models: LFM2-ColBERT
(queries and documents via input_type), ColIdefics3 (a query and images in one request) and
Qwen3-VL-Embedding (texts with the query instruction and images) and Llama-Nemotron-Embed-VL
(texts as queries by default and as documents, images); the vectors equal the goldens and
/v1/models/{id} tells family, kind, modalities, dim, prompts and image limits."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from golden_checks import assert_matches
from http_servers import Served, serve_real_model

GOLDENS = Path(__file__).resolve().parents[1] / "goldens"


def _index(name: str) -> tuple[dict, np.lib.npyio.NpzFile]:
    return json.loads((GOLDENS / f"{name}.json").read_text()), np.load(GOLDENS / f"{name}.npz")


def _data_uri(name: str) -> str:
    data = (GOLDENS / "images" / f"{name}.png").read_bytes()
    return "data:image/png;base64," + base64.b64encode(data).decode()


def _card(server: Served, name: str) -> dict:
    return httpx.get(server.url + "/v1/models/" + name, timeout=30).json()


@pytest.fixture(scope="module")
def colbert(tiny_models_dir: Path) -> Iterator[Served]:
    index, _ = _index("colbert_reference")
    yield from serve_real_model(str(tiny_models_dir / index["model_dir"]), "tiny/lfm2-colbert")


@pytest.fixture(scope="module")
def colsmol(tiny_models_dir: Path) -> Iterator[Served]:
    index, _ = _index("colidefics3_reference")
    yield from serve_real_model(str(tiny_models_dir / index["model_dir"]), "tiny/colsmol")


@pytest.fixture(scope="module")
def qwen3_vl(tiny_models_dir: Path) -> Iterator[Served]:
    index, _ = _index("qwen3_vl_reference")
    yield from serve_real_model(str(tiny_models_dir / index["model_dir"]), "tiny/qwen3-vl")


def test_lfm2_colbert_queries_and_documents(colbert: Served) -> None:
    index, ref = _index("colbert_reference")
    texts = index["texts"]  # pylate truncates to the query / document length
    client = colbert.openai()
    for role in ("query", "document"):
        resp = client.embeddings.create(
            model="tiny/lfm2-colbert",
            input=texts,
            extra_body={"input_type": role, "truncate": True},
        )
        for i, d in enumerate(resp.data):
            vecs = np.asarray(d.embedding, dtype=np.float32).reshape(-1, 32)
            assert_matches(vecs, ref[f"expansion.{role}.{i}"], f"{role} {i}")
    card = _card(colbert, "tiny/lfm2-colbert")
    assert (card["kind"], card["modalities"], card["dimensions"]) == ("multi_vector", ["text"], 32)
    assert card["family"] == "lfm2 (ColBERT)" and card["default_prompt_name"] == "query"
    assert card["prompts"] == {"query": "[Q] ", "document": "[D] "}


def test_colidefics3_query_and_images(colsmol: Served) -> None:
    index, ref = _index("colidefics3_reference")
    images = [_data_uri(n) for n in index["images"][:3]]
    resp = colsmol.openai().embeddings.create(
        model="tiny/colsmol", input=[index["texts"][1], *images]
    )
    refs = [ref["query.1.embeddings"], *(ref[f"image.{i}.embeddings"] for i in range(3))]
    for i, (d, r) in enumerate(zip(resp.data, refs, strict=True)):
        assert_matches(np.asarray(d.embedding, dtype=np.float32).reshape(-1, 128), r, str(i))
    card = _card(colsmol, "tiny/colsmol")
    assert (card["family"], card["kind"], card["modalities"]) == (
        "colidefics3",
        "multi_vector",
        ["text", "image"],
    )
    assert card["image"] == {"max_pixels": 64 * 64, "max_image_tokens": 20}


def test_qwen3_vl_texts_and_images(qwen3_vl: Served) -> None:
    index, ref = _index("qwen3_vl_reference")
    client = qwen3_vl.openai()
    resp = client.embeddings.create(
        model="tiny/qwen3-vl", input=index["texts"], extra_body={"input_type": "query"}
    )
    vecs = np.stack([np.asarray(d.embedding, dtype=np.float32) for d in resp.data])
    assert_matches(vecs, ref["query.embeddings"], "queries")
    assert resp.usage.prompt_tokens == sum(len(x) for x in index["modes"]["query"]["input_ids"])
    images = [_data_uri(n) for n in index["images"]]
    resp = client.embeddings.create(model="tiny/qwen3-vl", input=images)
    vecs = np.stack([np.asarray(d.embedding, dtype=np.float32) for d in resp.data])
    assert_matches(vecs, ref["image.embeddings"], "images")
    card = _card(qwen3_vl, "tiny/qwen3-vl")
    assert (card["family"], card["kind"], card["dimensions"]) == ("qwen3_vl", "pooled", 64)
    assert card["prompts"]["query"] == index["instructions"]["query"]
    assert card["image"]["min_pixels"] == index["pixels"]["min"]


@pytest.fixture(scope="module")
def nemotron_vl(tiny_models_dir: Path) -> Iterator[Served]:
    index, _ = _index("nemotron_vl_reference")
    yield from serve_real_model(str(tiny_models_dir / index["model_dir"]), "tiny/nemotron-vl")


def test_llama_nemotron_vl_queries_documents_and_images(nemotron_vl: Served) -> None:
    index, ref = _index("nemotron_vl_reference")
    client = nemotron_vl.openai()
    for role, extra in (("query", {}), ("document", {"input_type": "document"})):
        resp = client.embeddings.create(
            model="tiny/nemotron-vl", input=index["texts"], extra_body=extra
        )
        vecs = np.stack([np.asarray(d.embedding, dtype=np.float32) for d in resp.data])
        assert_matches(vecs, ref[f"{role}.embeddings"], role)
        tokens = sum(len(x) for x in index["modes"][role]["input_ids"])
        assert resp.usage.prompt_tokens == tokens
    images = [_data_uri(n) for n in index["images"]]
    resp = client.embeddings.create(model="tiny/nemotron-vl", input=images)
    vecs = np.stack([np.asarray(d.embedding, dtype=np.float32) for d in resp.data])
    assert_matches(vecs, ref["image.embeddings"], "images")
    card = _card(nemotron_vl, "tiny/nemotron-vl")
    assert (card["family"], card["kind"], card["dimensions"]) == ("llama_nemotron_vl", "pooled", 64)
    assert card["modalities"] == ["text", "image"] and card["pooling"] == "mean"
    assert card["prompts"] == {"query": "query: ", "document": "passage: "}
    assert card["default_prompt_name"] == "query" and card["max_tokens"] == 256
    assert card["image"] == {"max_pixels": 6 * 32 * 32, "max_image_tokens": 28}
