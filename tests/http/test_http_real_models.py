"""The real server command (``python -m app --model PATH``) with real MLX models, driven by the
official openai client: the tiny random ColQwen2.5 and the real all-MiniLM-L6-v2."""

from __future__ import annotations

import base64
import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from server_process import ServerProcess

REPO = Path(__file__).resolve().parents[2]
COLQWEN_NAME = "tiny/colqwen2.5"


@pytest.fixture(scope="module")
def colqwen_server(tiny_colqwen_path: Path) -> Iterator[ServerProcess]:
    server = ServerProcess(["--model", str(tiny_colqwen_path), "--served-model-name", COLQWEN_NAME])
    try:
        server.wait_healthy()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def minilm_server(minilm_path: Path) -> Iterator[ServerProcess]:
    # the old entry point, to keep it working
    server = ServerProcess(["--model", str(minilm_path)], module="mlx_embeddings_server.main")
    try:
        server.wait_healthy()
        yield server
    finally:
        server.stop()


def png_data_uri(size=(64, 48)) -> str:
    buf = io.BytesIO()
    Image.new("RGB", size, (30, 120, 220)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def test_colqwen_queries_float_and_base64(colqwen_server: ServerProcess) -> None:
    client = colqwen_server.openai()
    texts = ["what is the revenue in 2023?", "a chart"]
    as_b64 = client.embeddings.create(model=COLQWEN_NAME, input=texts)  # the client's default
    as_float = client.embeddings.create(model=COLQWEN_NAME, input=texts, encoding_format="float")
    assert as_b64.usage.prompt_tokens == as_float.usage.prompt_tokens > 0
    total = 0
    for b, f in zip(as_b64.data, as_float.data, strict=True):
        rows = np.asarray(f.embedding, dtype=np.float32)
        n_tokens, dim = rows.shape
        assert dim == 128 and f.model_extra["shape"] == [n_tokens, dim]
        flat = np.asarray(b.embedding, dtype=np.float32)
        assert flat.shape == (n_tokens * dim,)
        np.testing.assert_allclose(flat, rows.ravel(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, rtol=1e-3)
        total += n_tokens
    assert as_float.usage.prompt_tokens == total  # every real token, no padding rows


def test_colqwen_page_image(colqwen_server: ServerProcess) -> None:
    body = {
        "model": COLQWEN_NAME,
        "input": [{"type": "image_url", "image_url": {"url": png_data_uri()}}],
    }
    r = httpx.post(colqwen_server.url + "/v1/embeddings", json=body, timeout=120)
    assert r.status_code == 200, r.text
    [item] = r.json()["data"]
    n_tokens, dim = item["shape"]
    assert dim == 128 and len(item["embedding"]) == n_tokens
    assert r.json()["usage"]["prompt_tokens"] == n_tokens
    assert len(item["image_grid"]) == 2 and len(item["image_token_span"]) == 2


def test_colqwen_model_card(colqwen_server: ServerProcess) -> None:
    model = colqwen_server.openai().models.retrieve(COLQWEN_NAME)
    assert model.model_extra["kind"] == "multi_vector"
    assert model.model_extra["modalities"] == ["text", "image"]


def test_minilm_pooled_embeddings(minilm_server: ServerProcess, minilm_path: Path) -> None:
    client = minilm_server.openai()
    name = str(minilm_path)
    texts = ["A man is eating food.", "A man is eating a piece of bread.", "The sky is blue."]
    as_b64 = client.embeddings.create(model=name, input=texts)
    as_float = client.embeddings.create(model=name, input=texts, encoding_format="float")
    vecs = np.asarray([d.embedding for d in as_float.data], dtype=np.float32)
    assert vecs.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, rtol=1e-4)
    np.testing.assert_allclose(
        np.asarray([d.embedding for d in as_b64.data], dtype=np.float32), vecs, atol=1e-6
    )
    sims = vecs @ vecs.T
    assert sims[0, 1] > sims[0, 2]  # the real model ranks the paraphrase closer
    assert as_float.usage.prompt_tokens > 3 * 2


def test_minilm_rejects_images_and_bad_dimensions(
    minilm_server: ServerProcess, minilm_path: Path
) -> None:
    url = minilm_server.url + "/v1/embeddings"
    image = {"type": "image_url", "image_url": {"url": png_data_uri()}}
    r = httpx.post(url, json={"model": str(minilm_path), "input": ["ok", image]}, timeout=60)
    assert r.status_code == 400 and r.json()["error"]["param"].startswith("input[1]")
    r = httpx.post(url, json={"model": str(minilm_path), "input": "x", "dimensions": 128})
    assert r.status_code == 400 and r.json()["error"]["param"] == "dimensions"


def test_server_stops_cleanly_on_sigint(tiny_bert_path: Path) -> None:
    server = ServerProcess(["--model", str(tiny_bert_path)])
    try:
        server.wait_healthy()
    finally:
        code = server.stop()
    assert code == 0, server.output()


def test_missing_model_flag_is_a_usage_error() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLX_EMB_")}
    r = subprocess.run(
        [sys.executable, "-m", "app"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 2
    assert "--model is required" in r.stderr


def test_a_model_that_cannot_load_makes_the_server_exit(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"model_type": "not-a-model"}')
    server = ServerProcess(["--model", str(tmp_path)])
    try:
        server.proc.wait(60)
    finally:
        code = server.stop()
    assert code == 1
    out = server.output()
    assert "cannot serve" in out and "not-a-model" in out and "not supported" in out


@pytest.mark.slow
def test_a_query_during_a_1024_input_request_returns_while_the_bulk_still_runs(
    minilm_server: ServerProcess,
) -> None:
    """Search while indexing: the query takes the interactive lane, ahead of the bulk."""
    import threading
    import time

    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()
    docs = [" ".join(words[(i + k) % 12] for k in range(8 + i % 40)) for i in range(1024)]
    model = minilm_server.openai().models.list().data[0].id
    done: dict[str, float] = {}

    def bulk() -> None:
        body = {"model": model, "input": docs}
        r = httpx.post(minilm_server.url + "/v1/embeddings", json=body, timeout=600,
                       headers={"Cache-Control": "no-store"})  # fmt: skip
        assert r.status_code == 200 and len(r.json()["data"]) == 1024
        assert r.headers["x-lane"] == "bulk"
        done["bulk"] = time.monotonic()

    t = threading.Thread(target=bulk)
    t.start()
    time.sleep(1.0)  # the bulk request is being computed
    r = httpx.post(minilm_server.url + "/v1/embeddings", timeout=60,
                   json={"model": model, "input": "where is the query?"},
                   headers={"Cache-Control": "no-store"})  # fmt: skip
    answered = time.monotonic()
    assert r.status_code == 200 and r.headers["x-lane"] == "interactive"
    t.join(600)
    assert done["bulk"] > answered, "the query waited for the whole bulk request"
