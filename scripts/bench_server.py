"""How much the HTTP server costs over the bare model, from one run.

Prints:

* the server's p50 latency for one query over the raw adapter forward p50 of one query;
* the throughput of 32 concurrent single-input clients over offline batch-32 throughput.

Usage::

    uv run python scripts/bench_server.py [--model PATH] [--requests 50] [--clients 32]

Without ``--model`` it builds the tiny random ColQwen2.5 (scripts/make_tiny_models.py) in a
temporary directory. The offline numbers are measured first, in this process; then the server
runs as a subprocess (``python -m app``, no cache) so both never compete for the CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

QUERIES = [
    "what was the revenue in 2023?",
    "where is the table of contents",
    "a chart of monthly sales by region",
    "who signed the agreement",
]


def p50(samples: list[float]) -> float:
    return statistics.median(samples)


def tiny_colqwen(out: Path) -> Path:
    import make_tiny_models  # scripts/ is on sys.path when a script here runs

    make_tiny_models.make_all(out)
    return out / make_tiny_models.COLQWEN_DIRNAME


def offline(model: str, n: int, batch: int) -> dict[str, float]:
    """Raw adapter numbers: forward p50 of one query, and batch-``batch`` throughput."""
    from app.engine import load_adapter
    from app.settings_cli import load_settings

    settings = load_settings(["--model", model], env={})

    adapter = load_adapter(settings)
    from app.engine.base import TextInput

    one = [adapter.prepare(TextInput(QUERIES[0]))]
    for _ in range(3):
        adapter.forward(one)
    singles = []
    for _ in range(n):
        t = time.perf_counter()
        adapter.forward(one)
        singles.append(time.perf_counter() - t)
    prep = []
    for i in range(n):
        t = time.perf_counter()
        adapter.forward([adapter.prepare(TextInput(QUERIES[i % len(QUERIES)]))])
        prep.append(time.perf_counter() - t)
    full = [adapter.prepare(TextInput(QUERIES[i % len(QUERIES)])) for i in range(batch)]
    adapter.forward(full)
    rounds = max(3, n // 10)
    t = time.perf_counter()
    for _ in range(rounds):
        adapter.forward(full)
    elapsed = time.perf_counter() - t
    del adapter
    gc.collect()
    return {
        "forward_p50": p50(singles),
        "prepare_forward_p50": p50(prep),
        "batch_throughput": rounds * batch / elapsed,
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str, port: int, batch: int) -> subprocess.Popen:
    args = [sys.executable, "-m", "app", "--model", model, "--served-model-name", "bench"]
    args += ["--port", str(port), "--no-cache", "--max-batch-size", str(batch)]
    args += ["--log-level", "warning"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLX_EMB_")}
    return subprocess.Popen(args, cwd=REPO, env=env)


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 600) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit("the server did not become healthy")


class RawClient:
    """A minimal keep-alive HTTP/1.1 client, so the numbers measure the server, not a client
    library (httpx's async client tops out at a few hundred requests/s on a small machine)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, payload: bytes) -> bytes:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n"
        ).encode()
        self.writer.write(head + payload)
        await self.writer.drain()
        status = await self.reader.readline()
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        body = await self.reader.readexactly(length)
        if b" 200 " not in status:
            raise RuntimeError(f"{status!r}: {body[:300]!r}")
        return body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def server_numbers(port: int, n: int, clients: int) -> dict[str, float]:
    def body(i: int) -> bytes:
        payload = {
            "model": "bench",
            "input": QUERIES[i % len(QUERIES)],
            "encoding_format": "base64",
        }
        return json.dumps(payload).encode()

    client = RawClient(port)
    for _ in range(5):
        await client.post("/v1/embeddings", body(0))
    singles = []
    for _ in range(n):
        t = time.perf_counter()
        await client.post("/v1/embeddings", body(0))
        singles.append(time.perf_counter() - t)
    client.close()

    per_client = max(4, n // 2)
    pool = [RawClient(port) for _ in range(clients)]

    async def one_client(k: int) -> None:
        for i in range(per_client):
            await pool[k].post("/v1/embeddings", body(k + i))

    await asyncio.gather(*(pool[k].post("/v1/embeddings", body(k)) for k in range(clients)))
    t = time.perf_counter()
    await asyncio.gather(*(one_client(k) for k in range(clients)))
    elapsed = time.perf_counter() - t
    for c in pool:
        c.close()
    return {"server_p50": p50(singles), "server_throughput": clients * per_client / elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="model directory or hub id (default: tiny ColQwen2.5)")
    parser.add_argument("--requests", type=int, default=50, help="samples per latency p50")
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients (and batch)")
    args = parser.parse_args()
    from app.blas import preload_openblas

    preload_openblas("auto")  # before building the tiny model imports mlx

    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or str(tiny_colqwen(Path(tmp)))
        raw = offline(model, args.requests, args.clients)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        proc = start_server(model, port, args.clients)
        try:
            wait_healthy(url, proc)
            served = asyncio.run(server_numbers(port, args.requests, args.clients))
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()

    ms = 1000.0
    print(f"model: {model}")
    print(f"raw forward p50 (1 query):            {raw['forward_p50'] * ms:8.2f} ms")
    print(f"raw prepare+forward p50 (1 query):    {raw['prepare_forward_p50'] * ms:8.2f} ms")
    print(f"server p50 (1 query, HTTP):           {served['server_p50'] * ms:8.2f} ms")
    print(
        f"latency ratio server/raw forward:     {served['server_p50'] / raw['forward_p50']:8.2f}x"
    )
    print(
        f"offline batch-{args.clients} throughput:          {raw['batch_throughput']:8.1f} items/s"
    )
    print(
        f"server throughput ({args.clients} clients):       "
        f"{served['server_throughput']:8.1f} items/s"
    )
    print(
        f"throughput ratio server/offline:      "
        f"{served['server_throughput'] / raw['batch_throughput']:8.2f}"
    )


if __name__ == "__main__":
    main()
