"""The async jobs API (same request body as /v1/embeddings):
POST /v1/embeddings/jobs → 202 job; GET /v1/embeddings/jobs/<id> → status + progress;
GET /v1/embeddings/jobs/<id>/result → the /v1/embeddings response (409 while running);
DELETE /v1/embeddings/jobs/<id> → cancel."""

from __future__ import annotations

from sanic import HTTPResponse, Request, Sanic

from app.auth import owner_of
from app.model_router import ModelRouter
from app.protocol import parse_embedding_request
from app.routes.request_body import read_json
from app.routes.responses import embeddings_response, json_response


async def submit_job(request: Request) -> HTTPResponse:
    req = parse_embedding_request(read_json(request))
    service: ModelRouter = request.app.ctx.service
    job = await service.submit_job(
        req, cache_control=request.headers.get("cache-control"), owner=owner_of(request)
    )
    return json_response(job, status=202, headers={"Location": f"/v1/embeddings/jobs/{job['id']}"})


async def job_status(request: Request, job_id: str) -> HTTPResponse:
    return json_response(await request.app.ctx.service.job_status(job_id, owner_of(request)))


async def job_result(request: Request, job_id: str) -> HTTPResponse:
    service: ModelRouter = request.app.ctx.service
    fmt = request.args.get("encoding_format")
    result = await service.job_result(job_id, fmt, owner_of(request))
    return await embeddings_response(request, result.body, result.n_floats)


async def cancel_job(request: Request, job_id: str) -> HTTPResponse:
    return json_response(await request.app.ctx.service.cancel_job(job_id, owner_of(request)))


def register(app: Sanic) -> None:
    for prefix in ("/v1", ""):
        tag = prefix.replace("/", "_")
        app.add_route(submit_job, f"{prefix}/embeddings/jobs", methods=["POST"], name=f"jobs{tag}")
        app.add_route(
            job_status, f"{prefix}/embeddings/jobs/<job_id>", methods=["GET"], name=f"job{tag}"
        )
        app.add_route(
            cancel_job,
            f"{prefix}/embeddings/jobs/<job_id>",
            methods=["DELETE"],
            name=f"job_cancel{tag}",
        )
        app.add_route(
            job_result,
            f"{prefix}/embeddings/jobs/<job_id>/result",
            methods=["GET"],
            name=f"job_result{tag}",
        )
