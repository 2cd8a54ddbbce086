"""Queued vs inline overhead, and queue throughput with 1, 2 and 4 workers.

    uv run python scripts/bench_jobs.py [--reps 5]

1. A 16-image batch through the tiny ColQwen2.5, inline vs as a job served by the in-process
   local worker (the embedded default: same engine, same MLX thread), on the embedded Redis.
2. A 64-item job on a sleep-bound fake model (0.1 s per 4-item chunk) served by 1, 2 and 4
   ``tests/fake_worker.py`` worker processes (real RQ workers): wall time and items/s.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from app.blas import preload_openblas  # noqa: E402

preload_openblas("auto")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from app.cache import CachePolicy  # noqa: E402
from app.engine.base import ImageInput, TextInput  # noqa: E402
from app.jobs.client import JobClient  # noqa: E402
from app.jobs.items import JobItem  # noqa: E402
from app.jobs.worker import LocalWorker, live_workers  # noqa: E402
from app.pipeline import Pipeline  # noqa: E402
from app.redis_embedded import start_redis  # noqa: E402
from app.settings import Settings  # noqa: E402

FAKE_FINGERPRINT = "fake|multi_vector|8"  # tests/fake_adapter.FakeAdapter's default


def _items(inputs) -> list[JobItem]:
    return [JobItem.of(x, None, f"input[{i}]") for i, x in enumerate(inputs)]


def images(n: int, seed: int) -> list[ImageInput]:
    """Pages as a client sends them: PNG files (a job ships these bytes, not a re-encoding)."""
    out = []
    for i in range(n):
        px = np.random.default_rng(seed * 1000 + i).integers(0, 255, (448, 448, 3), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(px, "RGB").save(buf, "PNG")
        out.append(ImageInput(Image.fromarray(px, "RGB"), content_hash=f"jb-{seed}-{i}",
                              meta={"format": "png"}, source=buf.getvalue()))  # fmt: skip
    return out


def load_tiny(tmp: Path):
    import make_tiny_models  # scripts/ is on sys.path when a script here runs

    make_tiny_models.make_all(tmp)
    from app.engine import load_engine

    settings = Settings(model=str(tmp / "tiny-colqwen2.5"), queue_threshold=8, job_chunk_size=8)
    engine = load_engine(settings)
    engine.wait_ready(300)
    return engine, settings


async def overhead(handle, engine, settings, reps: int) -> None:
    jobs = JobClient(handle, settings, engine.info.fingerprint)
    pipe = Pipeline(engine, None)
    inline, queued = [], []
    for rep in range(reps + 1):
        batch = images(16, rep)
        params = [f"input[{i}]" for i in range(16)]
        t = time.perf_counter()
        await pipe.compute(batch, params, [None] * 16, CachePolicy(), truncate=False)
        t_inline = time.perf_counter() - t
        t = time.perf_counter()
        st = await jobs.submit(_items(batch), {})
        await jobs.wait(st.id)
        t_queued = time.perf_counter() - t
        if rep:  # the first round warms up
            inline.append(t_inline)
            queued.append(t_queued)
    i, q = statistics.median(inline), statistics.median(queued)
    trips = []
    for rep in range(20):
        t = time.perf_counter()
        st = await jobs.submit(_items([TextInput(f"trip {rep}")]), {})
        await jobs.wait(st.id)
        trips.append(time.perf_counter() - t)
    await jobs.close()
    print(f"round trip of a 1-item text job: {statistics.median(trips) * 1000:.1f} ms")
    print(f"16 images, tiny ColQwen2.5: inline {i * 1000:.1f} ms, queued (local worker, "
          f"2 chunks of 8) {q * 1000:.1f} ms -> overhead {(q - i) * 1000:+.1f} ms "
          f"(x{q / i:.2f})")  # fmt: skip


async def throughput(handle, n_workers: int, items: int = 64, delay: float = 0.1) -> float:
    settings = Settings(model="fake", job_chunk_size=4, queue_name=f"bench-{n_workers}")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(REPO / "tests" / "fake_worker.py"),
                "--redis-url",
                handle.url,
                "--queue",
                settings.queue_name,
                "--delay",
                str(delay),
            ],
            cwd=REPO,
            env=env,
        )  # fmt: skip
        for _ in range(n_workers)
    ]
    try:
        jobs = JobClient(handle, settings, FAKE_FINGERPRINT)
        while len(live_workers(jobs.sync, jobs.queue, 5)) < n_workers:
            await asyncio.sleep(0.05)
        t = time.perf_counter()
        st = await jobs.submit(_items([TextInput(f"item {i}") for i in range(items)]), {})
        out = await jobs.wait(st.id, timeout=120)
        wall = time.perf_counter() - t
        assert len(out) == items
        await jobs.close()
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(10)
    return wall


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="mlxj", dir="/tmp") as tmp:
        handle = start_redis(Settings(model="x", data_dir=Path(tmp) / "data"))
        print(f"redis: {handle.kind} {handle.url}")
        try:
            engine, settings = load_tiny(Path(tmp) / "models")
            queue = JobClient(handle, settings, engine.info.fingerprint).queue
            worker = asyncio.run(LocalWorker({queue: engine}, handle, settings).start())
            asyncio.run(overhead(handle, engine, settings, args.reps))
            worker.stop()
            engine.close()
            base = None
            for n in (1, 2, 4):
                wall = asyncio.run(throughput(handle, n))
                base = base or wall
                print(
                    f"sleep-bound fake (0.1 s per 4-item chunk), 64 items, {n} worker(s): "
                    f"{wall:.2f} s, {64 / wall:.0f} items/s, speed-up x{base / wall:.2f}"
                )
        finally:
            handle.stop()


if __name__ == "__main__":
    main()
