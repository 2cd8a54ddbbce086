"""A deterministic numpy stand-in for a model, for tests and benchmarks (no MLX, no weights).

Vectors are derived from a hash of the input, so the same input always gives the same bits.
``python -m workers.testing --redis-url URL [--delay S] [--burst]`` runs a worker on it.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import sys
import time
from collections.abc import Sequence

import numpy as np

from app.engine.base import Embedding, EngineInput, ImageInput, ModelInfo, Prepared, TextInput
from app.engine.runner import Engine
from app.errors import InvalidRequest
from app.settings import Settings

BAD_TEXT = "__invalid__"  # prepare() rejects it, like a too-long input


class FakeAdapter:
    def __init__(
        self,
        *,
        dim: int = 8,
        vectors_per_item: int = 4,
        delay: float = 0.0,
        per_item_delay: float = 0.0,
        fingerprint: str = "fake-model@v1",
    ) -> None:
        self.dim = dim
        self.vectors_per_item = vectors_per_item
        self.delay = delay
        self.per_item_delay = per_item_delay
        self.info = ModelInfo(
            name="fake",
            kind="multi_vector",
            dim=dim,
            modalities=("text", "image"),
            max_tokens=512,
            fingerprint=fingerprint,
        )

    def prepare(self, item: EngineInput, *, truncate: bool = False) -> Prepared:
        if isinstance(item, TextInput):
            if item.text == BAD_TEXT:
                raise InvalidRequest("this input is not accepted by the fake model", "input")
            return Prepared(n_tokens=len(item.text.split()) + 1, payload=b"t" + item.text.encode())
        if isinstance(item, ImageInput):
            img = item.image.convert("RGB")
            digest = hashlib.sha256(img.tobytes()).digest()
            w, h = img.size
            return Prepared(n_tokens=16, payload=b"i" + digest, kind="image", pixels=w * h)
        ids = np.asarray(item.ids, dtype="<i8")
        return Prepared(n_tokens=len(ids), payload=b"k" + ids.tobytes())

    def forward(self, batch: list[Prepared]) -> list[Embedding]:
        time.sleep(self.delay + self.per_item_delay * len(batch))
        out = []
        for p in batch:
            seed = int.from_bytes(hashlib.sha256(p.payload).digest()[:8], "little")
            rng = np.random.default_rng(seed)
            vecs = rng.standard_normal((self.vectors_per_item, self.dim), dtype=np.float32)
            out.append(Embedding(vectors=vecs, n_tokens=p.n_tokens, extras={"kind": p.kind}))
        return out


def fake_engine(max_batch_size: int = 32, **kwargs) -> Engine:
    engine = Engine(lambda: FakeAdapter(**kwargs), max_batch_size=max_batch_size, max_wait_ms=0)
    engine.start().wait_ready(10)
    return engine


def main(argv: Sequence[str] | None = None) -> int:
    from workers.cli import run_worker

    p = argparse.ArgumentParser(prog="python -m workers.testing")
    p.add_argument("--redis-url", required=True)
    p.add_argument("--queue", default="mlx-embeddings")
    p.add_argument("--delay", type=float, default=0.0, help="seconds per forward pass")
    p.add_argument("--per-item-delay", type=float, default=0.0)
    p.add_argument("--dim", type=int, default=8)
    p.add_argument("--vectors", type=int, default=4)
    p.add_argument("--burst", action="store_true")
    p.add_argument("--name", default=None)
    p.add_argument("--log-level", default="warning")
    a = p.parse_args(argv)
    logging.basicConfig(level=a.log_level.upper())
    settings = Settings(
        model="fake", redis_url=a.redis_url, queue_name=a.queue, log_level=a.log_level
    )
    engine = fake_engine(
        delay=a.delay, per_item_delay=a.per_item_delay, dim=a.dim, vectors_per_item=a.vectors
    )
    run_worker(settings, engine, redis_url=a.redis_url, burst=a.burst, name=a.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
