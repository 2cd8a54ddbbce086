"""POST /v1/embeddings (and /embeddings)."""

from __future__ import annotations

from sanic import HTTPResponse, Request, Sanic

from app.model_router import ModelRouter
from app.protocol import parse_embedding_request
from app.routes.request_body import read_json
from app.routes.responses import embeddings_response


async def create_embeddings(request: Request) -> HTTPResponse:
    req = parse_embedding_request(read_json(request))
    service: ModelRouter = request.app.ctx.service
    result = await service.embed(req, cache_control=request.headers.get("cache-control"))
    request.ctx.result = result  # for the access log and the metrics
    headers = {"X-Cache": result.cache}
    if result.lane is not None:
        headers["X-Lane"] = result.lane
    return await embeddings_response(request, result.body, result.n_floats, headers=headers)


def register(app: Sanic) -> None:
    for prefix in ("/v1", ""):
        app.add_route(
            create_embeddings,
            f"{prefix}/embeddings",
            methods=["POST"],
            name=f"embeddings{prefix.replace('/', '_')}",
        )
