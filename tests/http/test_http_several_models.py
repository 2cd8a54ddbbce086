"""Three models in one server (``--model`` repeated): the golden tiny ColQwen2.5, tiny SigLIP
and the real all-MiniLM-L6-v2 on the one MLX thread, with the jobs API (fakeredis) and its local
worker. Each model answers as its reference does, also under concurrent mixed traffic; /v1/models
lists them all; a job runs on its own model's queue."""

from __future__ import annotations

import base64
import dataclasses
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from batch_checks import file_lines, request_line, wait_batch
from http_servers import MV_SETTINGS, Served, serve

GOLDENS = Path(__file__).resolve().parents[1] / "goldens"
COLQWEN = json.loads((GOLDENS / "colqwen_reference.json").read_text())
COLQWEN_REF = np.load(GOLDENS / "colqwen_reference.npz")
SIGLIP = json.loads((GOLDENS / "siglip_reference.json").read_text())
SIGLIP_REF = np.load(GOLDENS / "siglip_reference.npz")
MINILM_REF = np.load(GOLDENS / "minilm_reference.npz")
NAMES = ("colqwen", "siglip", "minilm")


@dataclasses.dataclass
class Three:
    served: Served
    backends: object


@pytest.fixture(scope="module")
def three(tiny_models_dir: Path, minilm_path: Path, tmp_path_factory) -> Iterator[Three]:
    from app.backends import Backends
    from app.engine import load_engine
    from app.redis_embedded import start_fakeredis

    settings = dataclasses.replace(
        MV_SETTINGS,
        data_dir=tmp_path_factory.mktemp("data"),  # the Batch API's files
        model=str(GOLDENS / "tiny-colqwen2.5"),
        served_model_name="colqwen",
        extra_models=(
            f"{tiny_models_dir / SIGLIP['model_dir']}=siglip",
            f"{minilm_path}=minilm",
        ),
        max_inputs=64,
        max_tokens_per_request=100_000,
        queue_threshold=2,  # 3+ uncached images become a job
    )
    engine = load_engine(settings)
    engine.wait_ready(180)
    backends = Backends(settings, start_fakeredis())
    served, thread = serve(settings, None, engine=engine, backends=backends)  # type: ignore[arg-type]
    deadline = time.time() + 20
    while len(backends.job_clients) < 3 and time.time() < deadline:
        time.sleep(0.05)
    yield Three(served, backends)
    thread.stop()
    engine.close()


def _uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def _colqwen_queries() -> list[dict]:
    return [i for i in COLQWEN["items"] if i["kind"] == "query"]


def _check_colqwen(client, items: list[dict], inputs: list[str]) -> None:
    resp = client.embeddings.create(model="colqwen", input=inputs)
    for item, data in zip(items, resp.data, strict=True):
        vecs = np.asarray(data.embedding, dtype=np.float32).reshape(-1, 128)
        ref = COLQWEN_REF[f"{item['name']}.embeddings"]
        assert vecs.shape == ref.shape and _cos(vecs, ref).min() >= 0.9999, item["name"]
    assert resp.model == "colqwen"


def _check_siglip(client) -> None:
    images = [_uri(GOLDENS / "images" / f"{n}.png") for n in SIGLIP["images"]]
    resp = client.embeddings.create(
        model="siglip", input=[*SIGLIP["texts"], *images], extra_body={"truncate": True}
    )
    vecs = np.stack([np.asarray(d.embedding, dtype=np.float32) for d in resp.data])
    ref = np.concatenate([SIGLIP_REF["text.embeddings"], SIGLIP_REF["image.embeddings"]])
    assert _cos(vecs, ref).min() >= 0.9999
    assert resp.model == "siglip"


def _check_minilm(client) -> None:
    sentences = [str(s) for s in MINILM_REF["sentences"]]
    resp = client.embeddings.create(model="minilm", input=sentences, extra_body={"truncate": True})
    vecs = np.stack([np.asarray(d.embedding, dtype=np.float32) for d in resp.data])
    assert _cos(vecs, MINILM_REF["embeddings"]).min() >= 0.9999
    assert resp.model == "minilm"


def test_each_model_answers_as_its_reference(three: Three) -> None:
    client = three.served.openai()
    queries = _colqwen_queries()
    _check_colqwen(client, queries, [q["text"] for q in queries])
    _check_siglip(client)
    _check_minilm(client)


def test_concurrent_requests_to_all_three_never_mix(three: Three) -> None:
    """Mixed traffic on the one MLX thread: every answer still equals its model's reference
    (a batch mixing models would fail the forward or give other vectors)."""
    client = three.served.openai()
    queries = _colqwen_queries()
    jobs = [
        lambda: _check_colqwen(client, queries, [q["text"] for q in queries]),
        lambda: _check_siglip(client),
        lambda: _check_minilm(client),
    ] * 4
    with ThreadPoolExecutor(6) as pool:
        for fut in [pool.submit(job) for job in jobs]:
            fut.result()


def test_models_lists_all_three_with_their_cards(three: Three) -> None:
    with three.served.client() as http:
        listed = http.get("/v1/models").json()["data"]
        assert [m["id"] for m in listed] == list(NAMES)
        cards = {m["id"]: m for m in listed}
        assert (cards["colqwen"]["kind"], cards["colqwen"]["dimensions"]) == ("multi_vector", 128)
        assert cards["siglip"]["modalities"] == ["text", "image"]
        assert (cards["minilm"]["kind"], cards["minilm"]["dimensions"]) == ("pooled", 384)
        assert all(m["ready"] for m in listed)
        assert http.get("/v1/models/minilm").json()["family"] == "bert"
        missing = http.get("/v1/models/nope")
    assert missing.status_code == 404
    message = missing.json()["error"]["message"]
    assert all(repr(n) in message for n in NAMES)


def test_an_unknown_model_is_404_naming_the_served_ones(three: Three) -> None:
    with three.served.client() as http:
        resp = http.post("/v1/embeddings", json={"model": "gpt-x", "input": "hi"})
    assert resp.status_code == 404
    err = resp.json()["error"]
    assert err["param"] == "model" and err["code"] == "model_not_found"
    assert "'colqwen', 'siglip', 'minilm'" in err["message"]


def test_text_only_model_takes_image_like_strings_as_text(three: Three) -> None:
    """Each model has its own resolver: a data URI is an image for SigLIP, text for MiniLM."""
    uri = _uri(GOLDENS / "images" / f"{SIGLIP['images'][0]}.png")
    with three.served.client() as http:
        as_image = http.post("/v1/embeddings", json={"model": "siglip", "input": uri})
        as_text = http.post("/v1/embeddings", json={"model": "minilm", "input": uri[:200]})
    assert as_image.status_code == 200 and "source_size" in as_image.json()["data"][0]
    assert as_text.status_code == 200 and "source_size" not in as_text.json()["data"][0]


def test_a_big_image_request_runs_as_a_job_on_its_models_queue(three: Three) -> None:
    images = [i for i in COLQWEN["items"] if i["kind"] == "image"][:3]
    inputs = [_uri(GOLDENS / i["image"]) for i in images]
    with three.served.client() as http:
        resp = http.post(
            "/v1/embeddings",
            json={"model": "colqwen", "input": inputs},
            headers={"Cache-Control": "no-cache"},
        )
        health = http.get("/health").json()
    assert resp.status_code == 200, resp.text
    assert resp.headers["X-Lane"] == "job"
    for item, data in zip(images, resp.json()["data"], strict=True):
        vecs = np.asarray(data["embedding"], dtype=np.float32).reshape(-1, 128)
        assert _cos(vecs, COLQWEN_REF[f"{item['name']}.embeddings"]).min() >= 0.9999
    queues = {name: m["queue"] for name, m in health["workers"]["models"].items()}
    assert list(queues) == list(NAMES) and len(set(queues.values())) == 3
    assert all(m["alive"] == 1 for m in health["workers"]["models"].values())
    assert health["models"] == list(NAMES)


def test_async_job_result_names_its_model(three: Three) -> None:
    with three.served.client() as http:
        sub = http.post("/v1/embeddings/jobs", json={"model": "minilm", "input": ["a", "b"]})
        assert sub.status_code == 202, sub.text
        job_id = sub.json()["id"]
        for _ in range(200):
            if http.get(f"/v1/embeddings/jobs/{job_id}").json()["status"] == "succeeded":
                break
            time.sleep(0.05)
        result = http.get(f"/v1/embeddings/jobs/{job_id}/result").json()
    assert result["model"] == "minilm" and len(result["data"]) == 2
    assert len(result["data"][0]["embedding"]) == 384


def test_rerank_routes_by_model(three: Three) -> None:
    with three.served.client() as http:
        pooled = http.post(
            "/v1/rerank",
            json={"model": "minilm", "query": "a cat", "documents": ["a cat", "stock prices"]},
        )
        late = http.post(
            "/v1/rerank",
            json={"model": "colqwen", "query": "sales", "documents": ["sales", "weather"]},
        )
    assert pooled.status_code == 200 and late.status_code == 200, (pooled.text, late.text)
    assert pooled.json()["results"][0]["index"] == 0
    assert late.json()["model"] == "colqwen"


def test_metrics_count_items_per_model(three: Three) -> None:
    with three.served.client() as http:
        assert http.post(
            "/v1/embeddings", json={"model": "minilm", "input": ["m1", "m2"]}
        ).is_success
        text = http.get("/metrics").text
    items = [line for line in text.splitlines() if line.startswith("mlxemb_embedded_items_total")]
    assert any('model="minilm"' in line and 'modality="text"' in line for line in items), items
    assert not any('model=""' in line for line in items)
    depth = [line for line in text.splitlines() if line.startswith("mlxemb_model_queue_depth")]
    assert {line.split('model="')[1].split('"')[0] for line in depth} == set(NAMES)


def test_a_batch_routes_each_line_to_its_model(three: Three) -> None:
    """One Batch API file with lines for two models (and one for a model not served): each
    line's output equals /v1/embeddings for its body."""
    bodies = [
        {"model": "minilm", "input": ["batch line one", "batch line two"]},
        {"model": "colqwen", "input": "batch query"},
        {"model": "siglip", "input": "a photo"},
        {"model": "nope", "input": "x"},
    ]
    data = b"\n".join(request_line(f"c{i}", b) for i, b in enumerate(bodies))
    client = three.served.openai()
    f = client.files.create(file=("in.jsonl", data), purpose="batch")
    batch = client.batches.create(
        input_file_id=f.id, endpoint="/v1/embeddings", completion_window="24h"
    )
    batch = wait_batch(client, batch.id, timeout=60.0)
    assert batch.status == "completed", batch
    assert (batch.request_counts.completed, batch.request_counts.failed) == (3, 1)
    out = {o["custom_id"]: o["response"]["body"] for o in file_lines(client, batch.output_file_id)}
    errors = file_lines(client, batch.error_file_id)
    assert [e["custom_id"] for e in errors] == ["c3"]
    assert errors[0]["response"]["status_code"] == 404
    with three.served.client() as http:
        for i, body in enumerate(bodies[:3]):
            direct = http.post("/v1/embeddings", json=body).json()
            assert out[f"c{i}"]["model"] == body["model"]
            for a, b in zip(out[f"c{i}"]["data"], direct["data"], strict=True):
                np.testing.assert_allclose(a["embedding"], b["embedding"], atol=1e-5)
