"""The ingestion loop and CLI against a fake jobs API (httpx.MockTransport) and an embedded
local Qdrant: chunking, resume, pooling on upsert, errors. The real server is exercised by
tests/integration/test_ingest_server.py."""

from __future__ import annotations

import base64
import hashlib
import io
import re
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pypdfium2 as pdfium
import pytest
from PIL import Image
from qdrant_client import QdrantClient, models

from app.ingest import cli
from app.ingest.client import EmbeddingsClient, JobFailed, ServerError, ServerUnreachable
from app.ingest.collection import MEAN_COLUMNS, MEAN_ROWS, ORIGINAL, open_qdrant
from app.ingest.pipeline import build_chunk, ingest_pages, page_spec
from app.ingest.pooling import mean_pool_rows_columns
from app.ingest.search import search
from app.ingest.walk import plan_pages, walk
from app.pooling import hierarchical_pool

MODEL = "fake-colqwen"
DIM = 16
PREFIX, SUFFIX = 3, 2


def _vectors(seed: bytes, n: int) -> np.ndarray:
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(seed).digest()[:8], "little"))
    v = rng.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _item(vectors: np.ndarray, index: int, **ext: Any) -> dict[str, Any]:
    return {
        "object": "embedding",
        "embedding": base64.b64encode(vectors.astype("<f4").tobytes()).decode(),
        "shape": list(vectors.shape),
        "index": index,
        **ext,
    }


def _image_item(image: Image.Image, seed: bytes, index: int, **ext: Any) -> dict[str, Any]:
    rows, cols = max(1, image.height // 20), max(1, image.width // 20)
    vecs = _vectors(seed, PREFIX + rows * cols + SUFFIX)
    grid = {"image_grid": [rows, cols], "image_token_span": [PREFIX, PREFIX + rows * cols]}
    return _item(vecs, index, **ext, **grid)


class FakeServer:
    """The jobs API: a job is 'running' on its first poll and 'succeeded' on the next."""

    def __init__(self) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        self.submitted: list[list[Any]] = []
        self.deleted: list[str] = []
        self.pooling: list[Any] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        path, method = request.url.path, request.method
        if path == "/v1/models":
            return httpx.Response(200, json={"object": "list", "data": [{"id": MODEL}]})
        if path == "/v1/embeddings" and method == "POST":
            body = orjson.loads(request.content)
            texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
            data = [_item(_vectors(t.encode(), 5), i) for i, t in enumerate(texts)]
            return httpx.Response(200, json={"object": "list", "data": data, "model": MODEL})
        if path == "/v1/embeddings/jobs" and method == "POST":
            body = orjson.loads(request.content)
            assert body["model"] == MODEL
            self.submitted.append(body["input"])
            job_id = f"embjob_{len(self.jobs)}"
            job: dict[str, Any] = {"id": job_id, "polls": 0, "input": body["input"]}
            self.pooling.append(body.get("pooling"))
            try:
                job["data"] = self._embed(body["input"], body.get("pooling"))
                job["error"] = None
            except ValueError as exc:
                job["data"], job["error"] = [], str(exc)
            self.jobs[job_id] = job
            return httpx.Response(202, json=self._status(job))
        m = re.fullmatch(r"/v1/embeddings/jobs/([^/]+)(/result)?", path)
        if m and m.group(1) in self.jobs:
            job = self.jobs[m.group(1)]
            if method == "DELETE":
                self.deleted.append(job["id"])
                return httpx.Response(200, json={"id": job["id"], "deleted": True})
            if m.group(2):
                body = {"object": "list", "data": job["data"], "model": MODEL}
                return httpx.Response(200, json=body)
            job["polls"] += 1
            return httpx.Response(200, json=self._status(job))
        return httpx.Response(404, json={"error": {"message": f"unknown URL {path}"}})

    def _status(self, job: dict[str, Any]) -> dict[str, Any]:
        total = len(job["data"]) or 1
        if job["error"] and job["polls"] >= 1:
            status, done = "failed", 0
        else:
            status = {0: "queued", 1: "running"}.get(job["polls"], "succeeded")
            done = total if status == "succeeded" else total // 2 * (job["polls"])
        error = {"message": job["error"], "type": "server_error"} if status == "failed" else None
        return {
            "id": job["id"],
            "object": "embedding.job",
            "status": status,
            "model": MODEL,
            "created_at": 0,
            "progress": {"completed": done, "total": total},
            "error": error,
        }

    def _embed(self, inputs: list[Any], pooling: Any = None) -> list[dict[str, Any]]:
        data = self._embed_pages(inputs)
        if pooling and pooling["method"] == "rows_cols":  # as the server does (app.pooling)
            for item in data:
                raw = np.frombuffer(base64.b64decode(item["embedding"]), "<f4")
                raw = raw.reshape(item["shape"])
                if pooling.get("pool_factor"):
                    pooled = hierarchical_pool(raw, pooling["pool_factor"])
                    item["embedding"] = base64.b64encode(pooled.astype("<f4").tobytes()).decode()
                    item["shape"] = list(pooled.shape)
                rows, cols = mean_pool_rows_columns(
                    raw, item["image_grid"], item["image_token_span"]
                )
                for key, v in (("pooled_rows", rows), ("pooled_columns", cols)):
                    v = v / np.linalg.norm(v, axis=1, keepdims=True)
                    item[key] = base64.b64encode(v.astype("<f4").tobytes()).decode()
                    item[f"{key}_shape"] = list(v.shape)
        return data

    def _embed_pages(self, inputs: list[Any]) -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = []
        for i, part in enumerate(inputs):
            if part["type"] == "image_url":
                raw = base64.b64decode(part["image_url"]["url"].split(",", 1)[1])
                data.append(_image_item(Image.open(io.BytesIO(raw)), raw, len(data)))
                continue
            f = part["file"]
            if "broken" in f["filename"]:
                raise ValueError(f"input[{i}]: cannot render {f['filename']}")
            raw = base64.b64decode(f["file_data"].split(",", 1)[1])
            doc = pdfium.PdfDocument(raw)
            for n in _pages(part["pages"]):
                img = doc[n - 1].render(scale=0.5).to_pil()
                item = _image_item(img, raw + bytes([n]), len(data), input_index=i, page=n)
                data.append(item)
        return data


def _pages(spec: str) -> list[int]:
    out: list[int] = []
    for token in spec.split(","):
        a, _, b = token.partition("-")
        out.extend(range(int(a), int(b or a) + 1))
    return out


def _png(path: Path, size: tuple[int, int], color: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def _pdf(path: Path, pages: int) -> Path:
    imgs = [Image.new("RGB", (120, 160), (40 * k, 90, 200 - 30 * k)) for k in range(pages)]
    imgs[0].save(path, "PDF", save_all=True, append_images=imgs[1:])
    return path


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    root = tmp_path / "docs"
    _png(root / "a.png", (100, 60), "red")
    _png(root / "b.png", (60, 100), "blue")
    _pdf(root / "c.pdf", 3)
    _png(root / "sub" / "d.jpg", (80, 80), "green")
    return root


@pytest.fixture
def fake() -> FakeServer:
    return FakeServer()


@pytest.fixture
def client(fake: FakeServer) -> EmbeddingsClient:
    return EmbeddingsClient("http://fake:8888/v1", transport=httpx.MockTransport(fake.handler))


@pytest.fixture
def qdrant(tmp_path: Path) -> QdrantClient:
    q = open_qdrant(None, tmp_path / "qdrant")
    yield q
    q.close()


def _ingest(docs: Path, client: EmbeddingsClient, qdrant: QdrantClient, **kw: Any):
    pages = plan_pages(walk([docs]), MODEL)
    return pages, ingest_pages(
        pages,
        client=client,
        qdrant=qdrant,
        collection="c",
        model=MODEL,
        poll=0,
        progress=False,
        **kw,
    )


def test_page_spec() -> None:
    assert page_spec([1, 2, 3, 7]) == "1-3,7"
    assert page_spec([4]) == "4"
    assert page_spec([2, 4, 5, 9, 10, 11]) == "2,4-5,9-11"


def test_chunks_group_pdf_pages_into_one_part(docs: Path) -> None:
    pages = plan_pages(walk([docs]), MODEL)
    chunk = build_chunk(pages[1:5])  # b.png, c.pdf p1-3
    assert [p["type"] for p in chunk.inputs] == ["image_url", "file"]
    assert chunk.inputs[1]["pages"] == "1-3"
    assert chunk.inputs[1]["file"]["file_data"].startswith("data:application/pdf;base64,")
    assert chunk.inputs[0]["image_url"]["url"].startswith("data:image/png;base64,")


def test_ingest_stores_every_page_once_and_resumes(
    docs: Path, fake: FakeServer, client: EmbeddingsClient, qdrant: QdrantClient
) -> None:
    pages, report = _ingest(docs, client, qdrant, chunk_size=2, max_jobs=2)
    assert report.ingested == 6 and report.skipped == 0 and report.jobs == 3
    assert qdrant.count("c").count == 6
    assert sorted(report.ids) == sorted(p.point_id for p in pages)
    # chunk 2 is c.pdf pages 1-2, chunk 3 is c.pdf page 3 + d.jpg
    assert [p.get("pages") for p in fake.submitted[1]] == ["1-2"]
    assert [p.get("pages") for p in fake.submitted[2]] == ["3", None]

    n_jobs = len(fake.submitted)
    _, again = _ingest(docs, client, qdrant, chunk_size=2)
    assert (again.ingested, again.skipped, again.jobs) == (0, 6, 0)
    assert len(fake.submitted) == n_jobs

    # an interrupted run: drop two points, the next run embeds only those
    qdrant.delete("c", points_selector=[pages[2].point_id, pages[3].point_id])
    _, resumed = _ingest(docs, client, qdrant, chunk_size=16)
    assert (resumed.ingested, resumed.skipped, resumed.jobs) == (2, 4, 1)
    assert [p.get("pages") for p in fake.submitted[-1]] == ["1-2"]
    assert qdrant.count("c").count == 6


def test_points_hold_original_pooled_vectors_and_payload(
    docs: Path, fake: FakeServer, client: EmbeddingsClient, qdrant: QdrantClient, tmp_path: Path
) -> None:
    pages, _ = _ingest(docs, client, qdrant, chunk_size=16)
    pdf_page = next(p for p in pages if p.kind == "pdf" and p.page == 2)
    image = next(p for p in pages if p.path.name == "a.png")
    rec = {
        r.id: r
        for r in qdrant.retrieve("c", [pdf_page.point_id, image.point_id], with_vectors=True)
    }
    item = fake.jobs["embjob_0"]["data"][3]  # a.png, b.png, c.pdf p1, p2 ...
    assert item["page"] == 2
    raw = np.frombuffer(base64.b64decode(item["embedding"]), "<f4").reshape(item["shape"])
    vec = rec[pdf_page.point_id].vector
    np.testing.assert_allclose(np.array(vec[ORIGINAL]), raw, atol=1e-6)
    rows, cols = mean_pool_rows_columns(raw, item["image_grid"], item["image_token_span"])
    norm = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731 - cosine storage
    np.testing.assert_allclose(np.array(vec[MEAN_ROWS]), norm(rows), atol=1e-6)
    np.testing.assert_allclose(np.array(vec[MEAN_COLUMNS]), norm(cols), atol=1e-6)

    # reopened from disk (local mode keeps what was sent): pooled vectors are stored unit-length
    qdrant.close()
    reopened = open_qdrant(None, tmp_path / "qdrant")
    vec = reopened.retrieve("c", [pdf_page.point_id], with_vectors=True)[0].vector
    reopened.close()
    for name in (ORIGINAL, MEAN_ROWS, MEAN_COLUMNS):
        np.testing.assert_allclose(np.linalg.norm(vec[name], axis=1), 1.0, atol=1e-5)

    pl = rec[pdf_page.point_id].payload
    assert pl["source"] == str((docs / "c.pdf").resolve())
    assert (pl["page"], pl["pages"], pl["kind"], pl["model"]) == (2, 3, "pdf", MODEL)
    rows_n, cols_n = item["image_grid"]
    assert (pl["width"], pl["height"]) == (cols_n * 28, rows_n * 28)  # no size from server
    pl = rec[image.point_id].payload
    assert (pl["page"], pl["width"], pl["height"], pl["kind"]) == (1, 100, 60, "image")


def test_failed_job_raises_its_message_and_keeps_earlier_chunks(
    docs: Path, fake: FakeServer, client: EmbeddingsClient, qdrant: QdrantClient
) -> None:
    _pdf(docs / "z_broken.pdf", 1)
    with pytest.raises(JobFailed, match="cannot render z_broken.pdf") as info:
        _ingest(docs, client, qdrant, chunk_size=3, max_jobs=1)
    assert str(info.value).endswith(f"(file: {docs / 'z_broken.pdf'})")
    assert qdrant.count("c").count == 6


def test_interrupt_cancels_the_jobs_in_flight(
    docs: Path,
    fake: FakeServer,
    client: EmbeddingsClient,
    qdrant: QdrantClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def interrupted(job_id: str):
        raise KeyboardInterrupt

    monkeypatch.setattr(client, "job", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _ingest(docs, client, qdrant, chunk_size=2, max_jobs=2)
    assert fake.deleted == ["embjob_0", "embjob_1"]


def test_search_two_stage_equals_exact_on_a_small_collection(
    docs: Path, client: EmbeddingsClient, qdrant: QdrantClient
) -> None:
    _ingest(docs, client, qdrant)
    q = client.embed(["a query"], MODEL)[0].vectors
    fast = search(qdrant, "c", q, top_k=3, prefetch=100)
    exact = search(qdrant, "c", q, top_k=3, prefetch=0)
    assert [p.id for p in fast] == [p.id for p in exact]
    assert [p.score for p in fast] == pytest.approx([p.score for p in exact], rel=1e-5)


def test_cli_ingests_and_queries(
    docs: Path, fake: FakeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    transport = httpx.MockTransport(fake.handler)
    real_init = EmbeddingsClient.__init__

    def init(self, server: str, **kw: Any) -> None:
        real_init(self, server, **kw, **({"transport": transport}))

    monkeypatch.setattr(EmbeddingsClient, "__init__", init)
    argv = [str(docs), "--collection", "c", "--qdrant-path", str(tmp_path / "q"), "--no-progress"]
    assert cli.main([*argv, "--chunk-size", "4"]) == 0
    out = capsys.readouterr().out
    assert "4 files, 6 pages: 6 ingested, 0 already in 'c'" in out
    assert cli.main([*argv, "--query", "red page", "--top-k", "2"]) == 0
    out = capsys.readouterr().out
    assert "0 ingested, 6 already in 'c'" in out
    assert "query: red page" in out and out.count(str(docs.resolve())) == 2


def test_cli_unreachable_server_says_how_to_start_one(docs: Path, tmp_path: Path, capsys) -> None:
    code = cli.main(
        [str(docs), "--server", "http://127.0.0.1:9", "--qdrant-path", str(tmp_path / "q")]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1 and "cannot reach the embeddings server" in err
    assert "mlx-embeddings-server --model" in err


def test_client_errors() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json={"error": {"message": "unknown URL", "type": "x"}})

    c = EmbeddingsClient("http://x", transport=httpx.MockTransport(handler))
    with pytest.raises(Exception, match="no jobs API"):
        c.submit_job([], MODEL)
    down = EmbeddingsClient("http://127.0.0.1:9")
    with pytest.raises(ServerUnreachable):
        down.model_id()


def test_pooling_is_asked_of_the_server_and_binary_quantization_is_configured(
    docs: Path, fake: FakeServer, client: EmbeddingsClient, tmp_path: Path
) -> None:
    qdrant = open_qdrant(None, tmp_path / "qbin")
    try:
        _ingest(docs, client, qdrant, chunk_size=16, binary_quantization=True)
        assert fake.pooling and all(p == {"method": "rows_cols"} for p in fake.pooling)
        params = qdrant.get_collection("c").config.params.vectors[ORIGINAL]
        assert isinstance(params.quantization_config, models.BinaryQuantization)
        q = _vectors(b"query", 4)
        assert len(search(qdrant, "c", q, top_k=3, prefetch=0)) == 3
    finally:
        qdrant.close()


def test_a_server_without_pooling_is_an_error(fake: FakeServer) -> None:
    from app.ingest.client import decode_item
    from app.ingest.pipeline import to_point
    from app.ingest.walk import PageRef

    item = decode_item(_item(_vectors(b"x", 8), 0, image_grid=[1, 3], image_token_span=[3, 6]))
    page = PageRef(path=Path("a.png"), page=1, page_count=1, kind="image", sha256="0" * 64,
                   point_id="00000000-0000-0000-0000-000000000000")  # fmt: skip
    with pytest.raises(ServerError, match="pooled_rows"):
        to_point(page, item, MODEL)


def test_pool_factor_stores_pooled_originals(
    docs: Path, fake: FakeServer, client: EmbeddingsClient, qdrant: QdrantClient
) -> None:
    pages, report = _ingest(docs, client, qdrant, chunk_size=16, pool_factor=2)
    assert report.ingested == len(pages)
    assert fake.pooling == [{"method": "rows_cols", "pool_factor": 2}]
    item = fake.jobs["embjob_0"]["data"][0]
    rec = qdrant.retrieve("c", [pages[0].point_id], with_vectors=True)[0]
    assert len(rec.vector[ORIGINAL]) == item["shape"][0]
    assert item["shape"][0] <= (PREFIX + SUFFIX + 15) // 2
