"""Cached vs computed latency, 1 and 16 images, through the real pipeline and a real Redis.

    uv run python scripts/bench_cache.py [--reps 20]

Model: the tiny ColQwen2.5 from scripts/make_tiny_models.py (real MLX compute); plus a fake
model with real-size ColQwen2.5 outputs (768 x 128 float32 per page) to show what a cache hit
costs at full size. Redis: the embedded redis-server (unix socket), else fakeredis.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
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

from app.cache import CachePolicy, EmbeddingCache  # noqa: E402
from app.engine.base import ImageInput  # noqa: E402
from app.pipeline import Pipeline  # noqa: E402
from app.redis_embedded import start_redis  # noqa: E402
from app.settings import Settings  # noqa: E402


def images(n: int, seed: int, size=(448, 448)) -> list[ImageInput]:
    out = []
    for i in range(n):
        rng = np.random.default_rng(seed * 1000 + i)
        px = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
        out.append(ImageInput(Image.fromarray(px, "RGB"), content_hash=f"bench-{seed}-{i}"))
    return out


def tiny_colqwen(tmp: Path):
    import make_tiny_models  # scripts/ is on sys.path when a script here runs

    make_tiny_models.make_all(tmp)
    from app.engine import load_engine

    settings = Settings(model=str(tmp / "tiny-colqwen2.5"))
    engine = load_engine(settings)
    engine.wait_ready(300)
    return engine, settings


def real_size_fake():
    sys.path.insert(0, str(REPO / "tests"))
    from fake_adapter import FakeAdapter, fake_engine

    engine = fake_engine(FakeAdapter(dim=128, image_tokens=768), max_wait_ms=0)
    engine.wait_ready(10)
    return engine, Settings(model="fake")


async def measure(engine, settings, cache, n: int, reps: int) -> tuple[float, float]:
    pipe = Pipeline(engine, cache)
    computed, cached = [], []
    for rep in range(reps):
        batch = images(n, seed=n * 100 + rep)
        params = [f"input[{i}]" for i in range(n)]
        keys = pipe.keys(batch, CachePolicy(), truncate=False)
        t = time.perf_counter()
        calls = engine.forward_calls
        a = await pipe.run(batch, params, keys, CachePolicy.from_request("no-cache"),
                           truncate=False)  # fmt: skip
        computed.append(time.perf_counter() - t)
        t = time.perf_counter()
        mid = engine.forward_calls
        b = await pipe.run(batch, params, keys, CachePolicy(), truncate=False)
        cached.append(time.perf_counter() - t)
        assert engine.forward_calls == mid > calls  # computed, then all from the cache
        assert all(x.vectors.tobytes() == y.vectors.tobytes()
                   for x, y in zip(a, b, strict=True))  # fmt: skip
    return statistics.median(computed), statistics.median(cached)


async def run(label: str, engine, settings, handle, reps: int) -> None:
    cache = EmbeddingCache.from_settings(handle, settings)
    await measure(engine, settings, cache, 1, 2)  # warm up
    for n in (1, 16):
        comp, hit = await measure(engine, settings, cache, n, reps)
        print(f"{label:32s} {n:3d} image(s): computed {comp * 1000:8.2f} ms   "
              f"cached {hit * 1000:7.2f} ms   speed-up x{comp / hit:7.1f}")  # fmt: skip
    await cache.close()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--reps", type=int, default=10)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="mlxb", dir="/tmp") as tmp:
        handle = start_redis(Settings(model="x", data_dir=Path(tmp) / "data"))
        print(f"redis: {handle.kind} {handle.url}")
        try:
            try:
                engine, settings = tiny_colqwen(Path(tmp) / "models")
                label = "tiny ColQwen2.5 (448x448 px)"
            except Exception as exc:  # no MLX model available: fall back to the fake
                print(f"tiny ColQwen2.5 unavailable ({exc}); using the real-size fake only")
                engine = None
            if engine is not None:
                asyncio.run(run(label, engine, settings, handle, args.reps))
                engine.close()
            engine, settings = real_size_fake()
            asyncio.run(run("fake, real-size 768x128 out", engine, settings, handle, args.reps))
            engine.close()
        finally:
            handle.stop()


if __name__ == "__main__":
    main()
