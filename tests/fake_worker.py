"""``python tests/fake_worker.py --redis-url URL [--delay S]``: a real mlx-embeddings worker
process (RQ, the embed pipeline, the cache) over the FakeAdapter instead of a model, so fault
tests get a wide, deterministic "mid-chunk" window."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

from fake_adapter import FakeAdapter, fake_engine  # noqa: E402

from app.settings import Settings  # noqa: E402
from workers.cli import run_worker  # noqa: E402


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="tests/fake_worker.py")
    p.add_argument("--redis-url", required=True)
    p.add_argument("--queue", default="mlx-embeddings", help="base queue name")
    p.add_argument("--delay", type=float, default=0.0, help="seconds per forward pass")
    p.add_argument("--name", default=None)
    p.add_argument("--fingerprint-suffix", default="", help="pretend another model setup")
    p.add_argument("--lease", type=float, default=10.0)
    p.add_argument("--log-level", default="warning")
    a = p.parse_args(argv)
    logging.basicConfig(level=a.log_level.upper())
    settings = Settings(model="fake", redis_url=a.redis_url, queue_name=a.queue,
                        log_level=a.log_level, job_lease=a.lease)  # fmt: skip
    adapter = FakeAdapter(forward_delay=a.delay, max_tokens=512)
    if a.fingerprint_suffix:
        object.__setattr__(
            adapter.info, "fingerprint", adapter.info.fingerprint + a.fingerprint_suffix
        )
    engine = fake_engine(adapter, max_wait_ms=0)
    engine.wait_ready(10)
    run_worker(settings, engine, redis_url=a.redis_url, name=a.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
