"""What every request passes through: the key check on the way in; the access log line and the
request metrics on the way out (Sanic's ``http.lifecycle.response`` signal, which also fires
for errors and after a streamed body)."""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from sanic import Request, Sanic

from app.auth import Guard
from app.metrics import Metrics

access_log = logging.getLogger("app.access")
log = logging.getLogger(__name__)
_PROBES = frozenset({"/health", "/metrics"})
_PARAM_TYPE = re.compile(r"<(\w+):[^>]*>")  # <job_id:str> -> <job_id>


def route_of(request: Request) -> str:
    """The route template (a bounded metrics label), ``unmatched`` for unknown URLs."""
    route = getattr(request, "route", None)
    if route is None:
        return "unmatched"
    return "/" + _PARAM_TYPE.sub(r"<\1>", route.path.lstrip("/"))


def install(app: Sanic, guard: Guard, metrics: Metrics, *, log_requests: bool) -> None:
    async def authenticate(request: Request) -> None:
        request.ctx.t0 = time.perf_counter()
        request.ctx.principal = guard.check(request.path, request.headers)

    async def finished(request: Request, response: Any) -> None:
        try:
            _finished(request, response, metrics, log_requests)
        except Exception:  # never let bookkeeping break a response
            log.exception("access log / metrics failed")

    app.register_middleware(authenticate, "request")
    app.add_signal(finished, "http.lifecycle.response")


def _finished(request: Request, response: Any, metrics: Metrics, log_requests: bool) -> None:
    ctx = request.ctx
    t0 = getattr(ctx, "t0", None)
    seconds = time.perf_counter() - t0 if t0 is not None else 0.0
    status = int(getattr(response, "status", 0) or 0)
    result = getattr(ctx, "result", None)
    route = route_of(request)
    metrics.request_done(route, request.method, status, seconds, result)
    if not log_requests:
        return
    principal = getattr(ctx, "principal", None)
    items = tokens = lane = "-"
    if result is not None:
        items, tokens, lane = str(result.items), str(result.tokens), result.lane or "cache"
    # Probes (load balancers, Prometheus) every few seconds would drown the log: debug only.
    level = logging.DEBUG if route in _PROBES and status < 400 else logging.INFO
    access_log.log(
        level,
        "%s %s %d items=%s tokens=%s lane=%s %.1fms key=%s",
        request.method, request.path, status, items, tokens, lane, seconds * 1000.0,
        principal.label if principal is not None else "-",
    )  # fmt: skip
