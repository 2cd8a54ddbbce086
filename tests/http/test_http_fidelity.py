"""Parity with colpali-engine holds through the HTTP API too: the real server command on the
golden tiny ColQwen2.5, queried with the official openai client (its default base64 encoding)
and with float JSON."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from server_process import ServerProcess

GOLDENS = Path(__file__).resolve().parents[1] / "goldens"
INDEX = json.loads((GOLDENS / "colqwen_reference.json").read_text())
REF = np.load(GOLDENS / "colqwen_reference.npz")
NAME = "golden/colqwen2.5"


def _input(item: dict) -> str:
    if item["kind"] == "query":
        return item["text"]
    data = (GOLDENS / item["image"]).read_bytes()
    return "data:image/png;base64," + base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def golden_server() -> Iterator[ServerProcess]:
    server = ServerProcess(
        ["--model", str(GOLDENS / "tiny-colqwen2.5"), "--served-model-name", NAME]
    )
    try:
        server.wait_healthy()
        yield server
    finally:
        server.stop()


def _check(vectors: np.ndarray, name: str) -> None:
    ref = REF[f"{name}.embeddings"]
    assert vectors.shape == ref.shape, name
    cos = (vectors * ref).sum(axis=1) / (
        np.linalg.norm(vectors, axis=1) * np.linalg.norm(ref, axis=1)
    )
    assert cos.min() >= 0.9999, name
    assert np.abs(vectors - ref).max() <= 1e-4, name


@pytest.mark.slow
def test_openai_client_vectors_match_colpali(golden_server: ServerProcess) -> None:
    items = INDEX["items"]
    client = golden_server.openai()
    resp = client.embeddings.create(model=NAME, input=[_input(i) for i in items])
    for item, data in zip(items, resp.data, strict=True):
        dim = 128
        vectors = np.asarray(data.embedding, dtype=np.float32).reshape(-1, dim)
        _check(vectors, item["name"])


@pytest.mark.slow
def test_float_json_vectors_match_colpali(golden_server: ServerProcess) -> None:
    import httpx

    items = INDEX["items"]
    body = {"model": NAME, "input": [_input(i) for i in items], "encoding_format": "float"}
    r = httpx.post(golden_server.url + "/v1/embeddings", json=body, timeout=120)
    assert r.status_code == 200, r.text
    for item, data in zip(items, r.json()["data"], strict=True):
        _check(np.asarray(data["embedding"], dtype=np.float32), item["name"])
        if item["kind"] == "image":
            start, end = data["image_token_span"]
            rows, cols = data["image_grid"]
            assert end - start == rows * cols == item["num_image_tokens"]
