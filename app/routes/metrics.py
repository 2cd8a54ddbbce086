"""GET /metrics: Prometheus text format (app.metrics)."""

from __future__ import annotations

import asyncio

from prometheus_client import CONTENT_TYPE_LATEST
from sanic import HTTPResponse, Request, Sanic


async def metrics(request: Request) -> HTTPResponse:
    body = await asyncio.to_thread(request.app.ctx.metrics.exposition)
    return HTTPResponse(body, content_type=CONTENT_TYPE_LATEST)


def register(app: Sanic) -> None:
    app.add_route(metrics, "/metrics", methods=["GET"], name="metrics")
