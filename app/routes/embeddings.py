"""POST /v1/embeddings (and /embeddings)."""

from __future__ import annotations

import asyncio

from sanic import HTTPResponse, Request, Sanic

from app.encoding import dumps
from app.protocol import parse_embedding_request
from app.routes.request_body import read_json, wants_no_cache
from app.service import INLINE_SERIALISE_FLOATS, EmbeddingService


async def create_embeddings(request: Request) -> HTTPResponse:
    req = parse_embedding_request(read_json(request))
    service: EmbeddingService = request.app.ctx.service
    result = await service.embed(req, no_cache=wants_no_cache(request))
    if result.n_floats > INLINE_SERIALISE_FLOATS:
        payload = await asyncio.to_thread(dumps, result.body)
    else:
        payload = dumps(result.body)
    return HTTPResponse(payload, content_type="application/json", headers={"X-Cache": result.cache})


def register(app: Sanic) -> None:
    for prefix in ("/v1", ""):
        app.add_route(
            create_embeddings,
            f"{prefix}/embeddings",
            methods=["POST"],
            name=f"embeddings{prefix.replace('/', '_')}",
        )
