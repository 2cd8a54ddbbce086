"""Late interaction on the server: /v1/rerank latency, bytes per page per encoding, and the
recall cost of pooling and quantization.

    uv run python scripts/bench_rerank.py [--reps 20] [--pages 1000] [--queries 50]

1. Latency: 1 query x 100 cached pages. The server command (``python -m app``, embedded Redis)
   on the goldens' tiny ColQwen2.5 (real MLX compute; its pages are small, <= 64 tokens), and an
   in-process server on a fake model with real-size pages (743 x 128): ``/v1/rerank`` (server
   scores) vs ``/v1/embeddings`` of the same pages (base64 and float JSON) + numpy MaxSim in the
   client. Every request is a cache hit: no forward runs.
2. Bytes per page (743 x 128) for each embedding_type, base64 and JSON, and after pooling.
3. Recall@10 against float32 MaxSim on ``--pages`` synthetic 743-token pages (clustered token
   vectors, as page patches are) and ``--queries`` 20-token queries: hierarchical pool factor 2
   and 3, int8, binary (documents as sign bits, queries float32), float16.
"""

from __future__ import annotations

import argparse
import base64
import io
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "tests" / "http"))

from app.encoding import dequantize, dumps, embedding_item, quantize  # noqa: E402
from app.pooling import hierarchical_pool  # noqa: E402
from app.scoring import maxsim_many  # noqa: E402

TOKENS, DIM, Q_TOKENS = 743, 128, 20


def png_uri(seed: int, size: tuple[int, int] = (448, 448)) -> str:
    """A page-like PNG: white, with dark text lines and a coloured box (about 5 KB)."""
    rng = np.random.default_rng(seed)
    im = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(im)
    for y in range(20, size[1] - 20, 14):
        width = int(rng.integers(size[0] // 3, size[0] - 40))
        draw.rectangle([20, y, 20 + width, y + 6], fill=(40, 40, 40))
    x0, y0 = (int(v) for v in rng.integers(20, size[0] // 2, 2))
    draw.rectangle([x0, y0, x0 + 120, y0 + 90], fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def parts(n: int) -> list[dict]:
    return [{"type": "image_url", "image_url": {"url": png_uri(i)}} for i in range(n)]


def _ms(samples: list[float]) -> str:
    return (
        f"{statistics.median(samples) * 1000:7.1f} ms (p90 {np.percentile(samples, 90) * 1000:.1f})"
    )


def latency(url: str, model: str, docs: list[dict], reps: int) -> dict[str, list[float]]:
    query = "quarterly revenue bar chart"
    out: dict[str, list[float]] = {"rerank": [], "rerank server embed": [],
                                   "rerank server score": [], "embed_base64+numpy": [],
                                   "embed_float+numpy": []}  # fmt: skip
    with httpx.Client(base_url=url, timeout=600) as c:
        warm = c.post("/v1/embeddings", json={"model": model, "input": docs,
                                              "input_type": "document"})  # fmt: skip
        warm.raise_for_status()
        c.post("/v1/rerank", json={"model": model, "query": query, "documents": docs})
        for _ in range(reps):
            t = time.perf_counter()
            r = c.post("/v1/rerank", json={"model": model, "query": query, "documents": docs})
            out["rerank"].append(time.perf_counter() - t)
            assert r.status_code == 200 and r.headers["x-cache"] == "hit", r.text[:300]
            timing = dict(p.split(";dur=") for p in r.headers["server-timing"].split(", "))
            out["rerank server embed"].append(float(timing["embed"]) / 1000)
            out["rerank server score"].append(float(timing["score"]) / 1000)
            for fmt in ("base64", "float"):
                t = time.perf_counter()
                q = c.post(
                    "/v1/embeddings",
                    json={
                        "model": model,
                        "input": [query],
                        "input_type": "query",
                        "encoding_format": fmt,
                    },
                )
                d = c.post("/v1/embeddings", json={"model": model, "input": docs,
                                                   "input_type": "document",
                                                   "encoding_format": fmt})  # fmt: skip
                assert d.headers["x-cache"] == "hit"
                qv = _decode(q.json()["data"][0])
                dv = [_decode(x) for x in d.json()["data"]]
                maxsim_many(qv, dv)
                out[f"embed_{fmt}+numpy"].append(time.perf_counter() - t)
    return out


def _decode(item: dict) -> np.ndarray:
    if isinstance(item["embedding"], str):
        flat = np.frombuffer(base64.b64decode(item["embedding"]), "<f4")
        return flat.reshape(item["shape"])
    return np.asarray(item["embedding"], dtype=np.float32)


def bench_latency(reps: int) -> None:
    from server_process import ServerProcess

    docs = parts(100)
    print("1. latency, 1 query x 100 cached pages (median of", reps, "runs, localhost HTTP)")
    path = REPO / "tests" / "goldens" / "tiny-colqwen2.5"
    server = ServerProcess(
        ["--model", str(path), "--served-model-name", "tiny", "--max-body-bytes", str(1 << 28)]
    )
    try:
        server.wait_healthy()
        for name, s in latency(server.url, "tiny", docs, reps).items():
            print(f"   tiny ColQwen2.5 (64 tokens/page)  {name:20} {_ms(s)}")
    finally:
        server.stop()
    from fake_adapter import FakeAdapter
    from http_servers import MV_SETTINGS, serve

    from app.backends import Backends
    from app.redis_embedded import start_redis

    settings = MV_SETTINGS.__class__(**{**MV_SETTINGS.__dict__, "max_tokens_per_request": 10**6,
                                        "max_inputs": 2048, "max_body_bytes": 1 << 30,
                                        "queue_threshold": 1000,
                                        "queue_pixel_budget": 1 << 40})  # fmt: skip
    import tempfile

    with tempfile.TemporaryDirectory(prefix="benchrr", dir="/tmp") as tmp:
        settings = settings.__class__(**{**settings.__dict__, "data_dir": Path(tmp) / "data"})
        backends = Backends(settings, start_redis(settings))
        adapter = FakeAdapter(kind="multi_vector", name=settings.model_name, dim=DIM,
                              max_tokens=64, image_tokens=TOKENS)  # fmt: skip
        served, thread = serve(settings, adapter, backends=backends)
        try:
            for name, s in latency(served.url, served.model, docs, reps).items():
                print(f"   fake, real-size (743 x 128)        {name:20} {_ms(s)}")
        finally:
            thread.stop()


def bench_bytes() -> None:
    rng = np.random.default_rng(0)
    page = rng.standard_normal((TOKENS, DIM)).astype(np.float32)
    page /= np.linalg.norm(page, axis=1, keepdims=True)
    print(f"\n2. bytes per page ({TOKENS} x {DIM}), the item's 'embedding' field")
    print("   embedding_type   base64      JSON array")
    for kind in ("float", "float16", "int8", "uint8", "binary", "ubinary"):
        b64 = len(embedding_item(page, 0, "base64", embedding_type=kind)["embedding"])
        arr = len(dumps(embedding_item(page, 0, "float", embedding_type=kind)["embedding"]))
        print(f"   {kind:15} {b64:9,d}  {arr:12,d}")
    for pf in (2, 3):
        n = len(hierarchical_pool(page, pf))
        b64 = len(embedding_item(page[:n], 0, "base64")["embedding"])
        print(f"   hierarchical pool_factor {pf}: {n} vectors, {b64:,d} bytes base64 float32")


def synthetic(n_pages: int, n_queries: int, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """Pages of clustered token vectors, as page patches are: each page holds 40 of 400
    concepts, in runs of 8 tokens, each token its concept plus noise (cosine ~0.9 to it);
    queries: 20 tokens near 5 concepts of one page (so other pages match 0-5 of them)."""
    rng = np.random.default_rng(seed)
    concepts = rng.standard_normal((400, DIM)).astype(np.float32)
    concepts /= np.linalg.norm(concepts, axis=1, keepdims=True)
    page_concepts = np.stack([rng.choice(len(concepts), 40, replace=False) for _ in range(n_pages)])
    pages = np.empty((n_pages, TOKENS, DIM), dtype=np.float32)
    sigma_page, sigma_query = 0.5 / np.sqrt(DIM), 0.7 / np.sqrt(DIM)
    for p in range(n_pages):
        which = page_concepts[p, rng.integers(0, 40, TOKENS // 8 + 1)].repeat(8)[:TOKENS]
        x = concepts[which] + sigma_page * rng.standard_normal((TOKENS, DIM)).astype(np.float32)
        pages[p] = x / np.linalg.norm(x, axis=1, keepdims=True)
    queries = np.empty((n_queries, Q_TOKENS, DIM), dtype=np.float32)
    for q in range(n_queries):
        target = page_concepts[rng.integers(0, n_pages), rng.choice(40, 5, replace=False)]
        x = concepts[target.repeat(4)] + sigma_query * rng.standard_normal((Q_TOKENS, DIM))
        queries[q] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return pages, queries


def _pool_pages(args: tuple[np.ndarray, int]) -> list[np.ndarray]:
    pages, pf = args
    return [hierarchical_pool(p, pf) for p in pages]


def top10(queries: np.ndarray, docs: list[np.ndarray]) -> list[set[int]]:
    return [set(np.argsort(-maxsim_many(q, docs), kind="stable")[:10].tolist()) for q in queries]


def bench_recall(n_pages: int, n_queries: int, workers: int) -> None:
    print(f"\n3. recall@10 vs float32 MaxSim ({n_pages} pages x {TOKENS} tokens, "
          f"{n_queries} queries x {Q_TOKENS} tokens)")  # fmt: skip
    pages, queries = synthetic(n_pages, n_queries)
    truth = top10(queries, list(pages))

    def report(name: str, docs: list[np.ndarray], q: np.ndarray = queries, extra: str = "") -> None:
        got = top10(q, docs)
        recall = np.mean([len(a & b) / 10 for a, b in zip(got, truth, strict=True)])
        print(f"   {name:28} recall@10 {recall:.3f}{extra}")

    report("float16", [quantize(p, "float16").astype(np.float32) for p in pages])
    report("int8", [dequantize(quantize(p, "int8"), "int8") for p in pages])
    report("binary (float32 queries)",
           [dequantize(quantize(p, "binary"), "binary", DIM) for p in pages])  # fmt: skip
    for pf in (2, 3):
        t = time.perf_counter()
        groups = [pages[i : i + 50] for i in range(0, n_pages, 50)]
        with ProcessPoolExecutor(workers) as ex:
            pooled = [p for g in ex.map(_pool_pages, [(g, pf) for g in groups]) for p in g]
        took = (time.perf_counter() - t) / n_pages * workers
        n = np.mean([len(p) for p in pooled])
        extra = f"  ({n:.0f} vectors/page; {took * 1000:.0f} ms/page on one core)"
        report(f"hierarchical pool_factor {pf}", pooled, extra=extra)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--pages", type=int, default=1000)
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--skip-latency", action="store_true")
    ap.add_argument("--skip-recall", action="store_true")
    args = ap.parse_args()
    if not args.skip_latency:
        bench_latency(args.reps)
    bench_bytes()
    if not args.skip_recall:
        bench_recall(args.pages, args.queries, args.workers)


if __name__ == "__main__":
    main()
