"""The Sanic application: routes, the one error handler, and resource lifetimes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

from sanic import HTTPResponse, Request, Sanic
from sanic import exceptions as sanic_exc
from sanic.handlers import ErrorHandler

from app import access
from app.auth import Guard, KeyRing
from app.errors import (
    ApiError,
    HeadersTooLarge,
    HttpStatusError,
    InternalError,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    UriTooLong,
)
from app.metrics import Metrics
from app.model_router import ModelRouter
from app.routes import register_routes
from app.routes.responses import json_response
from app.service import EmbeddingService
from app.settings import Settings

if TYPE_CHECKING:
    from app.backends import Backends
    from app.engine.runner import Engine
    from app.service import InputResolverLike

log = logging.getLogger(__name__)

APP_NAME = "mlx_embeddings_server"


def to_api_error(request: Request | None, exc: BaseException) -> ApiError:
    """Map anything raised while serving a request onto an ApiError (the one error table)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, sanic_exc.SanicException):
        headers = {str(k): str(v) for k, v in (getattr(exc, "headers", None) or {}).items()}
        method = request.method if request is not None else "?"
        path = request.path if request is not None else "?"
        if isinstance(exc, sanic_exc.NotFound):
            return NotFound(f"unknown URL: {method} {path}")
        if isinstance(exc, sanic_exc.MethodNotAllowed):
            allowed = headers.get("Allow", "")
            return MethodNotAllowed(
                f"method {method} is not allowed for {path}"
                + (f"; allowed: {allowed}" if allowed else ""),
                headers=headers,
            )
        if isinstance(exc, sanic_exc.PayloadTooLarge) and "header" in str(exc).lower():
            return _head_too_large(request)
        if isinstance(exc, sanic_exc.PayloadTooLarge):
            limit = request.app.config.REQUEST_MAX_SIZE if request is not None else None
            return PayloadTooLarge(
                "the request is larger than this server accepts"
                + (f" ({limit} bytes, --max-body-bytes)" if limit else "")
            )
        if isinstance(exc, sanic_exc.BadRequest):
            return InvalidRequest(f"bad request: {exc}")
        status = int(getattr(exc, "status_code", 500) or 500)
        return HttpStatusError(str(exc) or ("bad request" if status < 500 else "server error"),
                               status, headers)  # fmt: skip
    return InternalError("internal server error; the server log has the details")


def _head_too_large(request: Request | None) -> ApiError:
    """Sanic reports a too-long URL and too many header bytes alike: tell them apart."""
    limit = request.app.config.REQUEST_MAX_HEADER_SIZE if request is not None else 8192
    buf = bytes(getattr(getattr(request, "stream", None), "recv_buffer", b"") or b"")
    line_end = buf.find(b"\r\n")
    if line_end == -1 or line_end >= limit - 4:
        return UriTooLong(f"the request URL is longer than this server accepts ({limit} bytes)")
    return HeadersTooLarge(
        f"the request headers are larger than this server accepts ({limit} bytes in all)"
    )


def error_response(err: ApiError) -> HTTPResponse:
    return json_response(err.body(), status=err.status, headers=err.headers)


class OpenAIErrorHandler(ErrorHandler):
    """Every error, Sanic's own included, as an OpenAI error body with its status."""

    def default(self, request: Request, exception: Exception) -> HTTPResponse:
        err = to_api_error(request, exception)
        if isinstance(exception, sanic_exc.RequestCancelled):
            where = f"{request.method} {request.path}" if request is not None else "?"
            log.info("request cancelled by the client: %s", where)
        elif not isinstance(exception, ApiError | sanic_exc.SanicException):
            where = f"{request.method} {request.path}" if request is not None else "?"
            log.error("unexpected error on %s", where, exc_info=exception)
        elif err.status >= 500:
            log.warning("%s: %s", err.status, err.message)
        return error_response(err)


class EmbeddingsApp(Sanic):
    """Sanic 25 on uvloop can lose a SIGINT/SIGTERM that arrives during start-up (measured: 2
    of 10 servers sent SIGTERM right after their first /health answer served on):

    - between its start-up steps the loop is not running, and uvloop then records a signal
      without ever dispatching it (its self-pipe is closed while paused);
    - during the after-start step, Sanic's handler stops the loop, which only ends that step.

    So the app notes every signal from the start (:func:`_note_signals`) and its ``stop``
    checks a second later: a stop or a signal not followed by the shutdown is made again."""

    def stop(self, terminate: bool = True, unregister: bool = False) -> None:
        super().stop(terminate=terminate, unregister=unregister)
        with contextlib.suppress(RuntimeError):  # no running loop: nothing to stop again
            asyncio.get_running_loop().call_later(1.0, self.stop_if_still_serving)

    def stop_if_still_serving(self) -> None:
        if not getattr(self.ctx, "stopping", False):
            log.info("stopping (the stop request came during start-up)")
            super().stop(terminate=False)


async def _mark_stopping(app: Sanic, _loop: Any = None) -> None:
    app.ctx.stopping = True


async def _note_signals(app: EmbeddingsApp, loop: Any = None) -> None:
    """Wrap the Python-level SIGINT/SIGTERM handlers (uvloop's, which only record the signal
    while the loop is paused) so a signal in start-up still stops the server."""
    if threading.current_thread() is not threading.main_thread():
        return  # tests serve from other threads, without signals
    noted: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        inner = signal.getsignal(sig)
        if not callable(inner):
            continue

        def handler(signum: int, frame: Any, inner: Any = inner) -> None:
            noted.append(signum)
            inner(signum, frame)

        signal.signal(sig, handler)

    def check() -> None:
        if noted:
            app.stop_if_still_serving()

    asyncio.get_running_loop().call_later(1.0, check)


def _unique_name(name: str | None) -> str:
    if name is not None:
        return name
    try:
        Sanic.get_app(APP_NAME)
    except sanic_exc.SanicException:
        return APP_NAME
    return f"{APP_NAME}_{uuid.uuid4().hex[:8]}"


def _resolver(settings: Settings, engine: Any) -> InputResolverLike:
    from app.inputs import InputResolver

    return InputResolver(settings, modalities=lambda: engine.info.modalities)


def create_app(
    settings: Settings,
    engine: Engine,
    *,
    resolver: InputResolverLike | None = None,
    backends: Backends | None = None,
    name: str | None = None,
    keys: KeyRing | None = None,
) -> Sanic:
    """The application serving ``engine`` (already started; it may still be loading), with
    every model of ``settings`` (``--model`` repeated; ``engine.view(name)`` each).

    ``resolver``: the InputResolver of a one-model server (default: one built from
    ``settings`` per model); the resolvers and the engine are closed when the server stops.
    ``backends``: Redis cache, job store and local worker (``app.backends.Backends.start``);
    without them the server computes everything inline and has no jobs API. ``keys``: the API
    keys (default: read from ``settings``)."""
    services: dict[str, EmbeddingService] = {}
    resolvers: list[InputResolverLike] = []
    per_model = settings.per_model()
    if resolver is not None and len(per_model) > 1:
        raise ValueError("a resolver can be given for a one-model server only")
    for model_settings in per_model:
        view = engine.view(model_settings.model_name)
        model_resolver = resolver if resolver is not None else _resolver(model_settings, view)
        resolvers.append(model_resolver)
        services[model_settings.model_name] = EmbeddingService(
            model_settings, view, model_resolver, backends
        )
    app = EmbeddingsApp(
        _unique_name(name), error_handler=OpenAIErrorHandler(), configure_logging=False
    )
    app.config.REQUEST_MAX_SIZE = settings.max_body_bytes
    # A synchronous request may wait for a queued job up to job_timeout.
    app.config.RESPONSE_TIMEOUT = max(60.0, settings.job_timeout + 30.0)
    app.config.FALLBACK_ERROR_FORMAT = "json"
    app.config.NOISY_EXCEPTIONS = False
    # TouchUp rewrites Sanic's class methods at startup; a second app in one process (tests,
    # embedding the server) then fails to start. The gain is negligible here.
    app.config.TOUCHUP = False

    app.ctx.settings = settings
    app.ctx.engine = engine
    app.ctx.backends = backends
    app.ctx.service = ModelRouter(services)
    app.ctx.created = int(time.time())
    app.ctx.health_probes = []
    if backends is not None:
        app.ctx.health_probes.append(backends.health)
    app.ctx.keys = keys if keys is not None else KeyRing.from_settings(settings)
    app.ctx.metrics = Metrics(engine, backends, settings.model_names)
    if hasattr(engine, "on_batch"):
        engine.on_batch = app.ctx.metrics.batch_done

    register_routes(app)
    guard = Guard(app.ctx.keys, public_health=settings.public_health)
    access.install(app, guard, app.ctx.metrics, log_requests=settings.access_log)

    async def start_backends(app: Sanic, _loop: Any = None) -> None:
        if backends is not None:
            await backends.attach(engine)

    async def close_resources(app: Sanic, _loop: Any = None) -> None:
        try:
            if backends is not None:
                await backends.close()
            for model_resolver in resolvers:
                await model_resolver.aclose()
        finally:
            await asyncio.to_thread(engine.close)

    app.register_listener(start_backends, "after_server_start")
    app.register_listener(_note_signals, "after_server_start")
    app.register_listener(_mark_stopping, "before_server_stop")

    app.register_listener(close_resources, "after_server_stop")
    return app
