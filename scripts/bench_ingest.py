"""Benchmark Qdrant ingestion and two-stage search.

    uv run python scripts/bench_ingest.py                      # tiny model, embedded Qdrant
    uv run python scripts/bench_ingest.py --server http://127.0.0.1:8888 --pages 64
    uv run python scripts/bench_ingest.py --skip-ingest --synthetic 2000

1. Ingestion: ``--pages`` distinct page images (variants of ``images/``) through a real server's
   jobs API into an embedded Qdrant, as ``mlx-embeddings-ingest`` does; prints pages/s (and the
   share spent upserting). Without ``--server`` it starts one on a tiny random ColQwen2.5 (so
   the number measures the plumbing, not the model).
2. Search: ``--synthetic`` pages of ``--tokens`` 128-d unit vectors (real ColQwen2.5 pages hold
   ~740: a 28 x 26 merged-patch grid plus prompt tokens) with some structure (topics per page
   region, shared prompt tokens) so pooling has something to keep; queries are noisy copies of
   a page's tokens. Prints query latency of exact MaxSim over ``original`` versus prefetch on
   the pooled vectors + MaxSim rerank, and recall@10 of the fast path against the exact one.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from qdrant_client import QdrantClient, models

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from app.ingest.client import EmbeddingsClient  # noqa: E402
from app.ingest.collection import (  # noqa: E402
    MEAN_COLUMNS,
    MEAN_ROWS,
    ORIGINAL,
    ensure_collection,
    open_qdrant,
)
from app.ingest.pipeline import ingest_pages  # noqa: E402
from app.ingest.pooling import mean_pool_rows_columns, unit_rows  # noqa: E402
from app.ingest.search import search  # noqa: E402
from app.ingest.walk import plan_pages, walk  # noqa: E402

DIM = 128


# ---- 1. ingestion --------------------------------------------------------------------------


def make_page_variants(out: Path, n: int) -> list[Path]:
    """``n`` distinct PNGs: the sample pages with a variant number stamped on them."""
    samples = sorted((REPO_ROOT / "images").glob("*.png"))
    font = ImageFont.load_default(size=18)
    paths = []
    for k in range(n):
        img = Image.open(samples[k % len(samples)]).convert("RGB")
        ImageDraw.Draw(img).text((20, 10), f"variant {k}", fill=(90, 90, 90), font=font)
        path = out / f"page_{k:04d}.png"
        img.save(path)
        paths.append(path)
    return paths


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_tiny_server(tmp: Path) -> tuple[subprocess.Popen, str]:
    import make_tiny_models  # scripts/ is on sys.path when a script here runs

    make_tiny_models.make_all(tmp / "models")
    port = _free_port()
    data_dir = Path(tempfile.mkdtemp(prefix="mlxb", dir="/tmp"))
    cmd = [sys.executable, "-m", "app", "--model", str(tmp / "models" / "tiny-colqwen2.5")]
    cmd += ["--port", str(port), "--data-dir", str(data_dir), "--log-level", "warning"]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("the tiny server did not become healthy in 120 s")


def bench_ingest(args: argparse.Namespace, tmp: Path) -> None:
    proc = None
    server = args.server
    if server is None:
        proc, server = start_tiny_server(tmp)
    try:
        pages_dir = tmp / "pages"
        pages_dir.mkdir()
        make_page_variants(pages_dir, args.pages)
        with EmbeddingsClient(server) as client:
            model = client.model_id()
            qdrant = open_qdrant(None, tmp / "qdrant")
            upsert_s = 0.0
            real_upsert = qdrant.upsert

            def timed_upsert(*a, **kw):
                nonlocal upsert_s
                t = time.perf_counter()
                try:
                    return real_upsert(*a, **kw)
                finally:
                    upsert_s += time.perf_counter() - t

            qdrant.upsert = timed_upsert  # type: ignore[method-assign]
            pages = plan_pages(walk([pages_dir]), model)
            kw = dict(client=client, qdrant=qdrant, collection="bench", model=model)
            kw |= dict(chunk_size=args.chunk_size, max_jobs=args.max_jobs, progress=False)
            report = ingest_pages(pages, **kw)
            again = ingest_pages(pages, **kw)
            qdrant.close()
        print(f"ingestion ({model}, server {server}, embedded Qdrant):")
        print(
            f"  {report.ingested} pages in {report.seconds:.2f} s = "
            f"{report.pages_per_second:.1f} pages/s ({report.jobs} jobs of <= {args.chunk_size}; "
            f"upserts {upsert_s:.2f} s = {100 * upsert_s / report.seconds:.0f}%)"
        )
        print(
            f"  re-run: {again.skipped} pages already stored, "
            f"checked in {1000 * again.seconds:.0f} ms"
        )
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(20)


# ---- 2. search -----------------------------------------------------------------------------


class SyntheticPages:
    """Structured random pages: each page is 3 horizontal bands, each about one of ``topics``
    topic vectors; tokens are noisy, slightly position-dependent copies of their band's
    topic. Prompt tokens are nearly the same on every page, as in the real model."""

    token_noise = 0.9  # length of each token's own noise (its topic vector has length 1)
    query_noise = 0.8

    def __init__(self, rows: int, cols: int, prefix: int, suffix: int, seed: int = 0) -> None:
        self.rows, self.cols, self.prefix, self.suffix = rows, cols, prefix, suffix
        self.rng = np.random.default_rng(seed)
        self.topics = unit_rows(self.rng.standard_normal((400, DIM)).astype(np.float32))
        self.prompt = unit_rows(self.rng.standard_normal((prefix + suffix, DIM)))
        self.row_field = self._noise((rows, DIM), 0.3)
        self.col_field = self._noise((cols, DIM), 0.3)

    def _noise(self, shape: tuple[int, ...], norm: float) -> np.ndarray:
        """Gaussian vectors of expected length ``norm``."""
        return self.rng.standard_normal(shape).astype(np.float32) * (norm / np.sqrt(DIM))

    @property
    def n_tokens(self) -> int:
        return self.prefix + self.rows * self.cols + self.suffix

    def page(self) -> np.ndarray:
        rng, rows, cols = self.rng, self.rows, self.cols
        bands = rng.choice(len(self.topics), size=3, replace=False)
        band_of_row = np.minimum(np.arange(rows) * 3 // rows, 2)
        base = self.topics[bands[band_of_row]][:, None, :]  # (rows, 1, dim)
        grid = base + self.row_field[:, None, :] + self.col_field[None, :, :]
        grid = grid + self._noise((rows, cols, DIM), self.token_noise)
        prompt = self.prompt + self._noise(self.prompt.shape, 0.1)
        tokens = np.concatenate(
            [prompt[: self.prefix], grid.reshape(rows * cols, DIM), prompt[self.prefix :]]
        )
        return unit_rows(tokens.astype(np.float32))

    def query(self, page: np.ndarray, n: int = 20) -> np.ndarray:
        """``n`` tokens: noisy copies of random image tokens of ``page``."""
        image = page[self.prefix : self.prefix + self.rows * self.cols]
        picked = image[self.rng.choice(len(image), size=n, replace=False)]
        return unit_rows(picked + self._noise(picked.shape, self.query_noise))


def numpy_maxsim(q: np.ndarray, docs: np.ndarray) -> np.ndarray:
    """MaxSim of ``q`` (n, d) against ``docs`` (N, T, d), unit vectors: (N,) scores."""
    return np.einsum("ntd,qd->nqt", docs, q, optimize=True).max(axis=2).sum(axis=1)


def numpy_two_stage(
    q: np.ndarray, orig: np.ndarray, rows: np.ndarray, cols: np.ndarray, prefetch: int, k: int
) -> np.ndarray:
    """The same two-stage query in numpy: top ``prefetch`` on each pooled vector, union,
    exact MaxSim rerank; the top ``k`` indices."""
    cand = set()
    for pooled in (rows, cols):
        s = numpy_maxsim(q, pooled)
        cand.update(np.argpartition(-s, min(prefetch, len(s)) - 1)[:prefetch].tolist())
    idx = np.fromiter(cand, dtype=np.int64)
    scores = numpy_maxsim(q, orig[idx])
    return idx[np.argsort(-scores)[:k]]


def bench_search(args: argparse.Namespace, tmp: Path) -> None:
    rows, cols, prefix, suffix = 28, 26, 6, 9
    gen = SyntheticPages(rows, cols, prefix, suffix)
    grid, span = (rows, cols), (prefix, prefix + rows * cols)
    n, k = args.synthetic, 10
    orig = np.empty((n, gen.n_tokens, DIM), dtype=np.float32)
    by_rows = np.empty((n, prefix + rows + suffix, DIM), dtype=np.float32)
    by_cols = np.empty((n, prefix + cols + suffix, DIM), dtype=np.float32)
    for i in range(n):
        orig[i] = gen.page()
        r, c = mean_pool_rows_columns(orig[i], grid, span)
        by_rows[i], by_cols[i] = unit_rows(r), unit_rows(c)
    targets = np.random.default_rng(1).choice(n, size=args.queries, replace=False)
    queries = [gen.query(orig[i]) for i in targets]
    print(
        f"\nsearch: {n} synthetic pages x {gen.n_tokens} tokens x {DIM}-d (pooled: "
        f"{by_rows.shape[1]} row / {by_cols.shape[1]} column vectors), {len(queries)} queries of "
        f"{len(queries[0])} tokens, top-{k}, prefetch {args.prefetch} per pooled vector"
    )

    # numpy: the arithmetic any engine must do (exact scan vs pooled scan + rerank)
    t = time.perf_counter()
    np_exact = [np.argsort(-numpy_maxsim(q, orig))[:k] for q in queries]
    np_exact_s = time.perf_counter() - t
    t = time.perf_counter()
    np_fast = [numpy_two_stage(q, orig, by_rows, by_cols, args.prefetch, k) for q in queries]
    np_fast_s = time.perf_counter() - t

    qdrant = QdrantClient(url=args.qdrant_url) if args.qdrant_url else QdrantClient(":memory:")
    name = "bench_search"
    if qdrant.collection_exists(name):
        qdrant.delete_collection(name)
    ensure_collection(qdrant, name, DIM, "synthetic")
    t0 = time.perf_counter()
    for start in range(0, n, 32):
        points = [
            models.PointStruct(
                id=i,
                vector={
                    ORIGINAL: orig[i].tolist(),
                    MEAN_ROWS: by_rows[i].tolist(),
                    MEAN_COLUMNS: by_cols[i].tolist(),
                },
            )
            for i in range(start, min(n, start + 32))
        ]
        qdrant.upsert(name, points, wait=True)
    load_s = time.perf_counter() - t0
    exact_s = fast_s = 0.0
    recalls, top1, np_agree = [], 0, 0
    for qi, q in enumerate(queries):
        t = time.perf_counter()
        exact = search(qdrant, name, q, top_k=k, prefetch=0)
        exact_s += time.perf_counter() - t
        t = time.perf_counter()
        fast = search(qdrant, name, q, top_k=k, prefetch=args.prefetch)
        fast_s += time.perf_counter() - t
        ex, fa = [int(p.id) for p in exact], [int(p.id) for p in fast]
        recalls.append(len(set(ex) & set(fa)) / k)
        top1 += ex[0] == fa[0]
        np_agree += ex == np_exact[qi].tolist() and fa == np_fast[qi].tolist()
    nq = len(queries)
    where = args.qdrant_url or "embedded local mode (in memory)"
    print(
        f"  recall@{k} of prefetch+rerank vs exact: {np.mean(recalls):.3f}; "
        f"top-1 agrees {top1}/{nq}; numpy gives the same rankings for {np_agree}/{nq}"
    )
    print(f"  numpy  exact MaxSim scan:      {1000 * np_exact_s / nq:8.1f} ms/query")
    print(
        f"  numpy  prefetch + rerank:      {1000 * np_fast_s / nq:8.1f} ms/query "
        f"(speed-up {np_exact_s / np_fast_s:.1f}x)"
    )
    print(f"  Qdrant {where}: loaded in {load_s:.1f} s")
    print(f"  Qdrant exact (original only):  {1000 * exact_s / nq:8.1f} ms/query")
    print(
        f"  Qdrant prefetch + rerank:      {1000 * fast_s / nq:8.1f} ms/query "
        f"(speed-up {exact_s / fast_s:.1f}x)"
    )
    if not args.qdrant_url:
        print(
            "  (local mode scores every point for every stage and filters afterwards, so "
            "prefetch cannot speed it up there; a Qdrant server searches the pooled vectors "
            "with HNSW and rescores only the candidates)"
        )
    else:
        qdrant.delete_collection(name)
    qdrant.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--server", help="a running server (default: start one on a tiny model)")
    ap.add_argument("--pages", type=int, default=48, help="pages to ingest (default: 48)")
    ap.add_argument("--chunk-size", type=int, default=16)
    ap.add_argument("--max-jobs", type=int, default=2)
    ap.add_argument("--synthetic", type=int, default=1000, help="synthetic pages (default: 1000)")
    ap.add_argument("--queries", type=int, default=20)
    ap.add_argument("--prefetch", type=int, default=100)
    ap.add_argument("--qdrant-url", help="search benchmark on a Qdrant server instead")
    ap.add_argument("--skip-ingest", action="store_true")
    ap.add_argument("--skip-search", action="store_true")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    try:
        if not args.skip_ingest:
            bench_ingest(args, tmp)
        if not args.skip_search:
            bench_search(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
