"""The OpenAI Files and Batch APIs (app.files, app.batches): /v1/files and /v1/batches."""

from __future__ import annotations

from sanic import HTTPResponse, Request, Sanic
from sanic.response import file_stream

from app.auth import owner_of
from app.batches import Batches
from app.errors import InvalidRequest, QueueUnavailable
from app.files import FileStore
from app.protocol import BatchCreateRequest, parse_model
from app.routes.request_body import read_json
from app.routes.responses import json_response


def _batches(request: Request) -> Batches:
    return batches_of(request.app)


def batches_of(app: Sanic) -> Batches:
    ctx = app.ctx
    if getattr(ctx, "batches", None) is None:
        if ctx.backends is None:
            raise QueueUnavailable(
                "this server runs without Redis, so it has no Files or Batch API",
                headers={"Retry-After": "60"},
            )
        root = ctx.settings.resolved_data_dir / "files"
        ctx.batches = Batches(FileStore(root, ctx.backends.handle), ctx.service)
    return ctx.batches


def _limit(request: Request, default: int, most: int) -> int:
    raw = request.args.get("limit")
    try:
        limit = int(raw) if raw is not None else default
    except ValueError:
        raise InvalidRequest(f"limit must be an integer, not {raw!r}", param="limit") from None
    if not 1 <= limit <= most:
        raise InvalidRequest(f"limit must be between 1 and {most}", param="limit")
    return limit


async def upload_file(request: Request) -> HTTPResponse:
    """A ``stream=True`` route: the body is read by :mod:`app.uploads`, to disk."""
    return json_response(await _batches(request).files.upload(request, owner_of(request)))


async def list_files(request: Request) -> HTTPResponse:
    store = _batches(request).files
    page = await store.list(
        owner_of(request),
        purpose=request.args.get("purpose"),
        limit=_limit(request, 10000, 10000),
        after=request.args.get("after"),
    )
    return json_response(page)


async def get_file(request: Request, file_id: str) -> HTTPResponse:
    return json_response(await _batches(request).files.get(file_id, owner_of(request)))


async def file_content(request: Request, file_id: str) -> HTTPResponse:
    path = await _batches(request).files.content_path(file_id, owner_of(request))
    return await file_stream(path, mime_type="application/jsonl")  # streamed, not read whole


async def delete_file(request: Request, file_id: str) -> HTTPResponse:
    return json_response(await _batches(request).files.delete(file_id, owner_of(request)))


async def create_batch(request: Request) -> HTTPResponse:
    req: BatchCreateRequest = parse_model(BatchCreateRequest, read_json(request))
    batches = _batches(request)
    batch = await batches.create(
        req.input_file_id, req.completion_window, req.metadata, owner_of(request)
    )
    return json_response(batch)


async def get_batch(request: Request, batch_id: str) -> HTTPResponse:
    return json_response(await _batches(request).get(batch_id, owner_of(request)))


async def list_batches(request: Request) -> HTTPResponse:
    page = await _batches(request).list(
        owner_of(request), after=request.args.get("after"), limit=_limit(request, 20, 100)
    )
    return json_response(page)


async def cancel_batch(request: Request, batch_id: str) -> HTTPResponse:
    return json_response(await _batches(request).cancel(batch_id, owner_of(request)))


async def resume_batches(app: Sanic, _loop: object = None) -> None:
    """Resume the batches a stopped or crashed server left active, once the model is ready."""
    backends = app.ctx.backends
    if backends is not None:
        batches_of(app).start_resuming(lambda: backends.jobs is not None)


async def close_batches(app: Sanic, _loop: object = None) -> None:
    batches = getattr(app.ctx, "batches", None)
    if batches is not None:
        await batches.close()


def register(app: Sanic) -> None:
    routes = [
        (upload_file, "/v1/files", "POST", "files_upload"),
        (list_files, "/v1/files", "GET", "files_list"),
        (get_file, "/v1/files/<file_id>", "GET", "file_get"),
        (delete_file, "/v1/files/<file_id>", "DELETE", "file_delete"),
        (file_content, "/v1/files/<file_id>/content", "GET", "file_content"),
        (create_batch, "/v1/batches", "POST", "batches_create"),
        (list_batches, "/v1/batches", "GET", "batches_list"),
        (get_batch, "/v1/batches/<batch_id>", "GET", "batch_get"),
        (cancel_batch, "/v1/batches/<batch_id>/cancel", "POST", "batch_cancel"),
    ]
    for handler, uri, method, name in routes:
        stream = handler is upload_file
        app.add_route(handler, uri, methods=[method], name=name, stream=stream)
    app.register_listener(resume_batches, "after_server_start")
    app.register_listener(close_batches, "before_server_stop")
