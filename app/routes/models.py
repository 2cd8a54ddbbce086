"""GET /v1/models and /v1/models/<id> (ids contain '/', e.g. qnguyen3/colqwen2.5-v0.2-mlx)."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from sanic import HTTPResponse, Request, Sanic

from app.engine.model_view import ModelView
from app.routes.responses import json_response
from app.settings import Settings

OWNED_BY = "mlx-embeddings-server"


def model_card(settings: Settings, engine: ModelView, created: int) -> dict[str, Any]:
    card: dict[str, Any] = {
        "id": settings.model_name,
        "object": "model",
        "created": created,
        "owned_by": OWNED_BY,
        "ready": engine.ready,
    }
    if engine.ready:
        info = engine.info
        if engine.memory_bytes is not None:
            card["memory_bytes"] = engine.memory_bytes  # MLX memory the model took at load
        card.update(
            kind=info.kind,
            dimensions=info.dim,
            modalities=list(info.modalities),
            max_tokens=info.max_tokens,
            dtype=info.dtype,
            limits={
                "max_inputs": settings.max_inputs,
                "max_tokens_per_input": info.max_tokens,
                "max_tokens_per_request": settings.max_tokens_per_request,
                "max_body_bytes": settings.max_body_bytes,
                "max_batch_size": settings.max_batch_size,
                "media_max_bytes": settings.media_max_bytes,
                "max_image_pixels": settings.max_image_pixels,
                "max_pdf_pages": settings.max_pdf_pages,
                "media_timeout_s": settings.media_timeout,
            },
        )
        extra = info.extra
        card.update(
            family=extra.get("family") or extra.get("architecture"),
            matryoshka=bool(extra.get("matryoshka")),
            prompts=dict(extra.get("prompts") or {}),
            default_prompt_name=extra.get("default_prompt_name"),
        )
        if info.kind == "pooled":
            card.update(pooling=extra.get("pooling"), normalized=extra.get("normalized"))
        if "image" in info.modalities:
            card["image"] = {
                k: info.extra[k]
                for k in ("min_pixels", "max_pixels", "max_image_tokens")
                if k in info.extra
            }
    return card


async def list_models(request: Request) -> HTTPResponse:
    ctx = request.app.ctx
    cards = [model_card(s.settings, s.engine, ctx.created) for s in ctx.service]
    return json_response({"object": "list", "data": cards})


async def get_model(request: Request, model_id: str) -> HTTPResponse:
    ctx = request.app.ctx
    model_id = unquote(model_id)  # the openai client sends '/' in ids as %2F
    service = ctx.service.for_model(model_id)
    return json_response(model_card(service.settings, service.engine, ctx.created))


def register(app: Sanic) -> None:
    for prefix in ("/v1", ""):
        tag = prefix.replace("/", "_")
        app.add_route(list_models, f"{prefix}/models", methods=["GET"], name=f"models{tag}")
        app.add_route(
            get_model, f"{prefix}/models/<model_id:path>", methods=["GET"], name=f"model{tag}"
        )
