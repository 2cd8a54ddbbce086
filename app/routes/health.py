"""GET (and HEAD) /health: 503 while the model loads or after it failed to load, then 200.

Other parts (Redis, workers) add fields through ``app.ctx.health_probes``: async callables
returning ``(ok, fields)``; a probe that is not ok turns the answer into 503."""

from __future__ import annotations

from typing import Any

from sanic import HTTPResponse, Request, Sanic

from app.engine.runner import Engine
from app.routes.responses import json_response


async def health(request: Request) -> HTTPResponse:
    ctx = request.app.ctx
    engine: Engine = ctx.engine
    body: dict[str, Any] = {"model": ctx.settings.model_name}
    names = ctx.settings.model_names
    if len(names) > 1:
        body["models"] = list(names)
    if engine.load_error is not None:
        err = engine.load_error
        failed = engine.models.failed
        which = f"the model {failed!r}" if len(names) > 1 and failed else "the model"
        body.update(status="error", error=f"{which} failed to load: {type(err).__name__}: {err}")
        return json_response(body, status=503)
    if not engine.ready:
        body["status"] = "loading"
        return json_response(body, status=503)
    ok = True
    for probe in ctx.health_probes:
        probe_ok, fields = await probe()
        ok = ok and probe_ok
        body.update(fields)
    body = {"status": "ok" if ok else "degraded", **body}
    return json_response(body, status=200 if ok else 503)


def register(app: Sanic) -> None:
    app.add_route(health, "/health", methods=["GET", "HEAD"], name="health")
