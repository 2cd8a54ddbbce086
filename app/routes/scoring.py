"""POST /v1/rerank and /v1/score (and the same without /v1)."""

from __future__ import annotations

from sanic import HTTPResponse, Request, Sanic

from app.protocol import RerankRequest, ScoreRequest, parse_model
from app.routes.request_body import read_json
from app.routes.responses import json_response
from app.scoring_service import ScoringResult, ScoringService


def _scoring(request: Request) -> ScoringService:
    scoring = getattr(request.app.ctx, "scoring", None)
    if scoring is None:
        scoring = request.app.ctx.scoring = ScoringService(request.app.ctx.service)
    return scoring


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
    return _response(request, await _scoring(request).rerank(req, cache_control=cache_control))


async def score(request: Request) -> HTTPResponse:
    req = parse_model(ScoreRequest, read_json(request))
    cache_control = request.headers.get("cache-control")
    return _response(request, await _scoring(request).score(req, cache_control=cache_control))


def register(app: Sanic) -> None:
    for prefix in ("/v1", ""):
        tag = prefix.replace("/", "_")
        app.add_route(rerank, f"{prefix}/rerank", methods=["POST"], name=f"rerank{tag}")
        app.add_route(score, f"{prefix}/score", methods=["POST"], name=f"score{tag}")
