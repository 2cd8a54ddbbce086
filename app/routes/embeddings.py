"""POST /v1/embeddings (and /embeddings)."""

from __future__ import annotations

import asyncio

from sanic import HTTPResponse, Request, Sanic

from app.encoding import dumps
from app.protocol import parse_embedding_request
from app.routes.request_body import read_json
from app.service import INLINE_SERIALISE_FLOATS, EmbeddingService


async def create_embeddings(request: Request) -> HTTPResponse:
    req = parse_embedding_request(read_json(request))
    service: EmbeddingService = request.app.ctx.service
    result = await service.embed(req, cache_control=request.headers.get("cache-control"))
    return await json_response(result.body, result.n_floats, headers={"X-Cache": result.cache})


async def json_response(
    body: dict, n_floats: int, *, status: int = 200, headers: dict[str, str] | None = None
) -> HTTPResponse:
    """Big responses are serialised off the event loop."""
    if n_floats > INLINE_SERIALISE_FLOATS:
        payload = await asyncio.to_thread(dumps, body)
    else:
        payload = dumps(body)
    return HTTPResponse(payload, status=status, content_type="application/json", headers=headers)


def register(app: Sanic) -> None:
    for prefix in ("/v1", ""):
        app.add_route(
            create_embeddings,
            f"{prefix}/embeddings",
            methods=["POST"],
            name=f"embeddings{prefix.replace('/', '_')}",
        )
