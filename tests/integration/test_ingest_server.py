"""End to end: the real server (subprocess, tiny ColQwen2.5) and its jobs API, ingesting the
sample pages and a 2-page PDF into an embedded local Qdrant with ``mlx-embeddings-ingest``."""

from __future__ import annotations

import base64
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from qdrant_client import QdrantClient
from server_process import ServerProcess

from app.ingest import cli
from app.ingest.client import EmbeddingsClient
from app.ingest.collection import MEAN_COLUMNS, MEAN_ROWS, ORIGINAL, open_qdrant
from app.ingest.pooling import maxsim, mean_pool_rows_columns
from app.ingest.search import embed_query, search
from app.ingest.walk import plan_pages, walk

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]
IMAGES = REPO_ROOT / "images"
QUERIES = [
    "quarterly revenue bar chart",
    "employee headcount table by department",
    "history of the lighthouse keepers",
    "energy mix pie chart",
    "invoice total amount due",
    "product roadmap slide",
]


@dataclass
class Server:
    url: str
    model: str


@pytest.fixture(scope="module")
def server(tiny_colqwen_path: Path) -> Iterator[Server]:
    proc = ServerProcess(["--model", str(tiny_colqwen_path), "--log-level", "warning"])
    try:
        proc.wait_healthy(120)
        model = httpx.get(proc.url + "/v1/models").json()["data"][0]["id"]
        yield Server(proc.url, model)
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def docs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample pages plus a 2-page PDF made of two of them, scaled down."""
    root = tmp_path_factory.mktemp("docs")
    shutil.copytree(IMAGES, root / "images")
    pages = [
        Image.open(IMAGES / name).convert("RGB").resize((425, 550))
        for name in ("table_headcount.png", "text_lighthouse.png")
    ]
    pages[0].save(root / "report.pdf", "PDF", save_all=True, append_images=pages[1:])
    return root


@pytest.fixture(scope="module")
def ingested(server: Server, docs: Path, tmp_path_factory: pytest.TempPathFactory):
    """Run the CLI twice on the same folder; the Qdrant store path and both outputs."""
    store = tmp_path_factory.mktemp("qdrant")
    argv = [str(docs), "--server", server.url, "--collection", "pages"]
    argv += ["--qdrant-path", str(store), "--no-progress", "--chunk-size", "3"]
    outputs = []
    for _ in range(2):
        code, out = _run_cli(argv)
        assert code == 0, out
        outputs.append(out)
    return store, outputs


def _run_cli(argv: list[str]) -> tuple[int, str]:
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        code = cli.main(argv)
    return code, buf.getvalue()


@pytest.fixture
def qdrant(ingested) -> Iterator[QdrantClient]:
    client = open_qdrant(None, ingested[0])
    yield client
    client.close()


def test_every_page_is_stored_once_and_a_second_run_adds_nothing(
    server: Server, docs: Path, ingested, qdrant: QdrantClient
) -> None:
    first, second = ingested[1]
    assert "7 files, 8 pages: 8 ingested, 0 already in 'pages'" in first
    assert "7 files, 8 pages: 0 ingested, 8 already in 'pages'" in second
    pages = plan_pages(walk([docs]), server.model)
    assert len(pages) == 8
    points, _ = qdrant.scroll("pages", limit=100, with_payload=True)
    assert sorted(str(p.id) for p in points) == sorted(p.point_id for p in pages)
    by_id = {str(p.id): p.payload for p in points}
    for page in pages:
        pl = by_id[page.point_id]
        assert pl["source"] == str(page.path.resolve())
        assert pl["page"] == page.page and pl["model"] == server.model
        assert pl["width"] > 0 and pl["height"] > 0
        if page.kind == "image":
            assert (pl["width"], pl["height"]) == Image.open(page.path).size


def test_stored_vectors_are_the_servers(server: Server, docs: Path, ingested, qdrant) -> None:
    pages = plan_pages(walk([docs]), server.model)
    image = next(p for p in pages if p.path.name == "invoice_acme.png")
    pdf_page = next(p for p in pages if p.kind == "pdf" and p.page == 2)
    pdf_uri = "data:application/pdf;base64," + base64.b64encode(pdf_page.path.read_bytes()).decode()
    img_uri = "data:image/png;base64," + base64.b64encode(image.path.read_bytes()).decode()
    with EmbeddingsClient(server.url) as client:
        img_item, pdf_item = client.embed(
            [
                {"type": "image_url", "image_url": {"url": img_uri}},
                {"type": "file", "file": {"file_data": pdf_uri, "filename": "r.pdf"}, "pages": "2"},
            ],
            server.model,
        )
    records = qdrant.retrieve("pages", [image.point_id, pdf_page.point_id], with_vectors=True)
    stored = {str(r.id): r.vector for r in records}
    for page, item in ((image, img_item), (pdf_page, pdf_item)):
        vec = stored[page.point_id]
        np.testing.assert_allclose(np.array(vec[ORIGINAL]), item.vectors, atol=2e-6)
        rows, cols = mean_pool_rows_columns(item.vectors, item.image_grid, item.image_token_span)
        unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
        np.testing.assert_allclose(np.array(vec[MEAN_ROWS]), unit(rows), atol=2e-6)
        np.testing.assert_allclose(np.array(vec[MEAN_COLUMNS]), unit(cols), atol=2e-6)
        assert len(vec[MEAN_ROWS]) < len(vec[ORIGINAL])


def test_reranked_scores_are_numpy_maxsim(server: Server, qdrant: QdrantClient) -> None:
    with EmbeddingsClient(server.url) as client:
        q = embed_query(client, "invoice total amount due", server.model)
    hits = search(qdrant, "pages", q, top_k=8, prefetch=100, with_vectors=[ORIGINAL])
    assert len(hits) == 8
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
    for hit in hits:
        assert hit.score == pytest.approx(maxsim(q, np.array(hit.vector[ORIGINAL])), rel=1e-4)


def test_pooled_first_stage_finds_the_exact_top1(server: Server, qdrant: QdrantClient) -> None:
    with EmbeddingsClient(server.url) as client:
        for text in QUERIES:
            q = embed_query(client, text, server.model)
            exact = search(qdrant, "pages", q, top_k=1, prefetch=0)
            fast = search(qdrant, "pages", q, top_k=1, prefetch=3)  # 3 of 8 per pooled vector
            assert fast[0].id == exact[0].id, text
            assert fast[0].score == pytest.approx(exact[0].score, rel=1e-5)


def test_cli_query_prints_ranked_sources(server: Server, ingested) -> None:
    argv = ["--server", server.url, "--collection", "pages", "--qdrant-path", str(ingested[0])]
    code, out = _run_cli([*argv, "--query", "energy mix pie chart", "--top-k", "3"])
    assert code == 0, out
    lines = [line for line in out.splitlines() if line.strip()[:2] in ("1.", "2.", "3.")]
    assert len(lines) == 3


def test_example_script_runs_on_the_embedded_qdrant(server: Server, tmp_path: Path) -> None:
    cmd = [sys.executable, str(REPO_ROOT / "examples" / "colqwen2.5_qdrant.py")]
    cmd += ["--server", server.url + "/v1", "--qdrant-path", str(tmp_path / "q")]
    for expect in ("6 pages in", "0 to embed"):
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
        assert out.returncode == 0, out.stderr
        assert expect in out.stdout
        assert out.stdout.count(f"{IMAGES}/") == 9  # 3 queries x top 3
