"""POST /v1/rerank and /v1/score (and the same without /v1)."""

from __future__ import annotations

from sanic import HTTPResponse, Request, Sanic

from app.protocol import RerankRequest, ScoreRequest, parse_model
from app.routes.request_body import read_json
from app.routes.responses import json_response
from app.scoring_service import ScoringResult, ScoringService


def _scoring(request: Request, model: str) -> ScoringService:
    """The scoring service of ``model`` (404 for a model this server does not hold)."""
    ctx = request.app.ctx
    if not hasattr(ctx, "scoring"):
        ctx.scoring = {}
    service = ctx.service.for_model(model)
    if model not in ctx.scoring:
        ctx.scoring[model] = ScoringService(service)
    return ctx.scoring[model]


def _response(request: Request, result: ScoringResult) -> HTTPResponse:
    request.ctx.result = result  # for the access log and the metrics
    headers = {"X-Cache": result.cache}
    if result.timings:
        headers["Server-Timing"] = ", ".join(
            f"{name};dur={seconds * 1000:.2f}" for name, seconds in result.timings.items()
        )
    if result.lane is not None:
        headers["X-Lane"] = result.lane
    return json_response(result.body, headers=headers)


async def rerank(request: Request) -> HTTPResponse:
    req = parse_model(RerankRequest, read_json(request))
    cache_control = request.headers.get("cache-control")
    return _response(
        request, await _scoring(request, req.model).rerank(req, cache_control=cache_control)
    )


async def score(request: Request) -> HTTPResponse:
    req = parse_model(ScoreRequest, read_json(request))
    cache_control = request.headers.get("cache-control")
    return _response(
        request, await _scoring(request, req.model).score(req, cache_control=cache_control)
    )


def register(app: Sanic) -> None:
    for prefix in ("/v1", ""):
        tag = prefix.replace("/", "_")
        app.add_route(rerank, f"{prefix}/rerank", methods=["POST"], name=f"rerank{tag}")
        app.add_route(score, f"{prefix}/score", methods=["POST"], name=f"score{tag}")
