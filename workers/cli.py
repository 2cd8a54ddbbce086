"""``mlx-embeddings-worker --model M [--model M2 ...] [--redis-url URL] [--burst]``.

An RQ worker (:class:`app.jobs.worker.EmbedWorker`, a ``SimpleWorker``: no fork) in the main
thread, with the model loaded once for the process. Without ``--redis-url`` it joins the
embedded Redis of a server running on the same ``--data-dir``. It serves only the chunks of the
model setups it holds (model, dtype, prompts: one queue each); ``--model`` repeats, as on the
server, and the worker then takes the chunks of each of its models.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Sequence
from typing import Any

import redis

from app.redis_embedded import RedisHandle, embedded_url, mask_url
from app.settings import Settings
from app.settings_cli import load_settings, model_paths_problem

log = logging.getLogger("mlx-embeddings-worker")

# What only the server uses (HTTP, request and media limits, job submission): hidden here.
SERVER_ONLY = frozenset({
    "host", "port", "max_inputs", "max_tokens_per_request", "max_body_bytes", "redis_server",
    "redis_maxmemory", "queue_threshold", "queue_pixel_budget", "job_ttl", "job_chunk_size",
    "local_worker", "orphan_timeout", "allowed_media_domains", "allow_private_media",
    "allowed_local_media_path", "media_connect_timeout", "media_timeout", "media_max_bytes",
    "max_image_pixels", "pdf_dpi", "max_pdf_pages", "access_log", "api_keys", "api_key_file",
    "allow_unauthenticated", "public_health", "metrics_key", "interactive_max_items",
    "interactive_max_tokens", "token_ids", "busy_bulk_batch_size", "max_queue",
})  # fmt: skip
DESCRIPTION = (
    "Worker of mlx-embeddings-server: loads the model once and computes the chunks of the "
    "server's jobs from its Redis queue. Every flag can also be set as an environment variable "
    "MLX_EMB_<FLAG_NAME>; give the server's model, dtype and prompt settings."
)


def parse_args(argv: Sequence[str] | None) -> tuple[Settings, argparse.Namespace]:
    extra = argparse.ArgumentParser(add_help=False)
    extra.add_argument("--queue", default=None, help="alias of --queue-name")
    extra.add_argument("--burst", action="store_true", help="quit when the queue is empty")
    extra.add_argument("--name", default=None, help="worker name (default: host-pid-random)")
    ours, rest = extra.parse_known_args(argv)
    if ours.queue:
        rest = [*rest, "--queue-name", ours.queue]
    only = [f.name for f in dataclasses.fields(Settings) if f.name not in SERVER_ONLY]
    settings = load_settings(
        rest, prog="mlx-embeddings-worker", only=only, parents=[extra], description=DESCRIPTION
    )
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
    settings: Settings, engine: Any, *, redis_url: str, burst: bool = False, name: str | None = None
) -> bool:
    """Serve chunks until stopped (SIGINT/SIGTERM: finish the current chunk, then quit)."""
    from app.jobs.worker import EmbedWorker, model_queues, worker_name

    handle = RedisHandle(kind="external", url=redis_url)
    views = model_queues(engine, settings)
    for queue, view in views.items():
        log.info("model %s: queue %r", view.name, queue)
    worker = EmbedWorker.for_models(views, handle, settings, name or worker_name("worker"))
    log.info("worker %s: %d model(s), redis %s", worker.name, len(views), mask_url(redis_url))
    try:
        return worker.work(burst=burst, logging_level=settings.log_level.upper())
    except redis.exceptions.ConnectionError as exc:  # stopped while Redis was away
        log.warning("worker %s stopped; Redis is unreachable (%s)", worker.name, exc)
        return False
    finally:
        worker.close()


def main(argv: Sequence[str] | None = None) -> int:
    settings, extra = parse_args(argv)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    problem = model_paths_problem(settings)
    if problem:
        log.error("%s", problem)
        return 2
    url = redis_url_for(settings)
    from app.blas import preload_openblas

    preload_openblas(settings)  # before mlx is imported: the same BLAS as the server
    from app.engine import load_engine

    engine = load_engine(settings)
    try:
        try:
            engine.wait_ready()
        except RuntimeError:
            err = engine.load_error
            log.error(
                "cannot serve %s: the model failed to load: %s: %s (--log-level debug shows "
                "the traceback)", settings.source_of(engine.models.failed), type(err).__name__, err,
            )  # fmt: skip
            return 1
        run_worker(settings, engine, redis_url=url, burst=extra.burst, name=extra.name)
    finally:
        engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
