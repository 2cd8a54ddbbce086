"""JSON responses (orjson; numpy arrays serialised directly)."""

from __future__ import annotations

import asyncio
from typing import Any

from sanic import HTTPResponse

from app.encoding import dumps

# Responses holding more floats than this are serialised off the event loop.
INLINE_SERIALISE_FLOATS = 200_000


def json_response(
    body: Any, *, status: int = 200, headers: dict[str, str] | None = None
) -> HTTPResponse:
    return HTTPResponse(
        dumps(body), status=status, content_type="application/json", headers=headers
    )


async def embeddings_response(
    body: dict, n_floats: int, *, headers: dict[str, str] | None = None
) -> HTTPResponse:
    """An embeddings body; a big one is serialised off the event loop."""
    if n_floats <= INLINE_SERIALISE_FLOATS:
        return json_response(body, headers=headers)
    payload = await asyncio.to_thread(dumps, body)
    return HTTPResponse(payload, content_type="application/json", headers=headers)
