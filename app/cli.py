"""``mlx-embeddings-server`` / ``python -m app``: load settings, preload BLAS, start the engine
and serve it with Sanic in one process."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Sequence
from typing import TYPE_CHECKING

from app.auth import KeyRing, check_bind
from app.blas import preload_openblas
from app.logging_setup import setup_logging
from app.settings import Settings
from app.settings_cli import load_settings, model_paths_problem

if TYPE_CHECKING:
    from app.backends import Backends

log = logging.getLogger("app.cli")


def main(argv: Sequence[str] | None = None, *, prog: str = "mlx-embeddings-server") -> int:
    settings = load_settings(argv, prog=prog)
    setup_logging(settings.log_level)
    # Until Sanic installs its own handlers, SIGTERM stops start-up like Ctrl-C does.
    signal.signal(signal.SIGTERM, _interrupt)
    backends = None
    try:
        keys = _keys_or_none(settings)
        if keys is None:
            return 2
        # Must run before anything imports mlx (app.engine does).
        preload_openblas(settings)
        from app.backends import Backends
        from app.redis_embedded import DataDirLocked

        # Redis first, from the main thread (an embedded redis-server dies with this process).
        try:
            backends = Backends.start(settings)
        except DataDirLocked as exc:
            log.error("%s", exc)
            return 1
        return _serve(settings, backends, keys)
    except KeyboardInterrupt:
        log.warning("interrupted during start-up; stopped")
        return 130
    finally:
        if backends is not None:
            backends.stop_redis()


def _keys_or_none(settings: Settings) -> KeyRing | None:
    """The API keys, or None after logging why the server must not start (a --model path
    that does not exist, an unreadable key file, an open server on a non-loopback address)."""
    problem = model_paths_problem(settings)
    keys = None
    if problem is None:
        try:
            keys = KeyRing.from_settings(settings)
        except OSError as exc:
            problem = f"cannot read --api-key-file: {exc}"
        else:
            problem = check_bind(settings, keys)
            if settings.api_key_file is not None and not keys.enabled:
                problem = f"--api-key-file {settings.api_key_file} holds no key"
    if problem is not None:
        log.error("%s", problem)
        return None
    assert keys is not None
    if keys.enabled:
        log.info("API keys required (%d): %s", len(keys.labels), ", ".join(keys.labels))
    return keys


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _serve(settings: Settings, backends: Backends, keys: KeyRing) -> int:
    from app.engine import load_engine
    from app.server import create_app

    engine = load_engine(settings)
    app = create_app(settings, engine, backends=backends, keys=keys)
    failed: list[BaseException] = []

    async def stop_if_the_model_fails(app, _loop=None) -> None:
        """A server that cannot load its model exits (non-zero) instead of answering 503s."""
        while not engine.ready:
            if engine.load_error is not None:
                failed.append(engine.load_error)
                err = engine.load_error
                log.error(
                    "cannot serve %s: the model failed to load: %s: %s (--log-level debug "
                    "shows the traceback)", settings.source_of(engine.models.failed),
                    type(err).__name__, err,
                )  # fmt: skip
                app.stop()
                return
            await asyncio.sleep(0.1)

    app.add_task(stop_if_the_model_fails(app))
    log.info(
        "serving %s on http://%s:%d/v1 - the model loads in the background; "
        "GET /health answers 200 once it is ready",
        ", ".join(f"{s.model_name} (from {s.model})" for s in settings.per_model()),
        settings.host,
        settings.port,
    )
    # Sanic's "consider --debug or --dev" hint names flags this CLI does not have.
    os.environ.setdefault("SANIC_IGNORE_PRODUCTION_WARNING", "1")
    # One process: multi-worker mode would load the model once per worker. The access log is
    # ours (app.access: one line per request, with items, tokens, lane and key label).
    app.run(
        host=settings.host,
        port=settings.port,
        single_process=True,
        access_log=False,
        motd=False,
    )
    return 1 if failed else 0
