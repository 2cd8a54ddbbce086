"""``mlx-embeddings-worker --model M --redis-url URL [--queue NAME] [--burst]``.

An RQ ``SimpleWorker`` (no fork: the forking worker would reload the model for every job)
in the main thread, with the model loaded once per process. Without ``--redis-url`` it joins
the embedded Redis of a server running on the same ``--data-dir``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

from rq import Queue, SimpleWorker

from app.redis_embedded import RedisHandle, embedded_url, mask_url
from app.settings import Settings, load_settings
from workers import runtime
from workers.local import worker_name
from workers.presence import Presence

log = logging.getLogger("mlx-embeddings-worker")


def parse_args(argv: Sequence[str] | None) -> tuple[Settings, argparse.Namespace]:
    extra = argparse.ArgumentParser(prog="mlx-embeddings-worker", add_help=False)
    extra.add_argument("--queue", dest="queue", default=None, help="alias of --queue-name")
    extra.add_argument("--burst", action="store_true", help="quit when the queue is empty")
    extra.add_argument("--name", default=None, help="worker name (default: host-pid-random)")
    ours, rest = extra.parse_known_args(argv)
    if ours.queue:
        rest = [*rest, "--queue-name", ours.queue]
    if "-h" in rest or "--help" in rest:
        extra.print_help()
    settings = load_settings(rest, prog="mlx-embeddings-worker")
    return settings, ours


def redis_url_for(settings: Settings) -> str:
    url = settings.redis_url or embedded_url(settings.resolved_data_dir)
    if not url:
        raise SystemExit(
            "mlx-embeddings-worker: no --redis-url, and no server with an embedded Redis runs "
            f"on --data-dir {settings.resolved_data_dir}"
        )
    return url


def run_worker(
    settings: Settings,
    engine: Any,
    *,
    redis_url: str,
    burst: bool = False,
    name: str | None = None,
    orphan_timeout: float = 300.0,
) -> bool:
    """Serve chunks until stopped (SIGINT/SIGTERM: finish the current chunk, then quit)."""
    handle = RedisHandle(kind="external", url=redis_url)
    runtime.set_engine(engine, settings)
    name = name or worker_name("worker")
    conn = handle.sync_client()
    queue = Queue(settings.queue_name, connection=conn)
    worker = SimpleWorker([queue], connection=conn, name=name)
    info = engine.info
    log.info(
        "worker %s: model %s (fingerprint %s), queue %r, redis %s",
        name, settings.model_name, info.fingerprint, settings.queue_name, mask_url(redis_url),
    )  # fmt: skip
    presence = Presence(
        handle.sync_client(), name, settings.queue_name, settings.model_name,
        orphan_timeout=orphan_timeout,
    ).start()  # fmt: skip
    try:
        return worker.work(burst=burst, logging_level=settings.log_level.upper())
    finally:
        presence.stop()


def main(argv: Sequence[str] | None = None) -> int:
    settings, extra = parse_args(argv)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    url = redis_url_for(settings)
    from app.blas import preload_openblas

    preload_openblas(settings)  # before mlx is imported: the same BLAS as the server
    from app.engine import load_engine

    engine = load_engine(settings)
    try:
        engine.wait_ready()
        run_worker(settings, engine, redis_url=url, burst=extra.burst, name=extra.name)
    finally:
        engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
