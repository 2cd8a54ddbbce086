"""JSON responses (orjson; numpy arrays serialised directly)."""

from __future__ import annotations

import asyncio
from typing import Any

from sanic import HTTPResponse, Request

from app.encoding import dumps
from app.malloc_trim import trim

# Responses holding more floats than this are serialised off the event loop ...
INLINE_SERIALISE_FLOATS = 200_000
# ... and above this they are streamed, a group of items at a time, so the whole JSON text
# (about 10 bytes a float) never sits in memory at once.
STREAM_FLOATS = 2_000_000
_GROUP_FLOATS = 256_000


def json_response(
    body: Any, *, status: int = 200, headers: dict[str, str] | None = None
) -> HTTPResponse:
    return HTTPResponse(
        dumps(body), status=status, content_type="application/json", headers=headers
    )


async def embeddings_response(
    request: Request, body: dict, n_floats: int, *, headers: dict[str, str] | None = None
) -> HTTPResponse | None:
    """An embeddings body; a big one is serialised off the event loop, a huge one streamed."""
    if n_floats <= INLINE_SERIALISE_FLOATS:
        return json_response(body, headers=headers)
    # once sent, its buffers are freed: give them back to the OS
    asyncio.get_running_loop().call_later(1.0, trim)
    if n_floats <= STREAM_FLOATS:
        payload = await asyncio.to_thread(dumps, body)
        response = HTTPResponse(payload, content_type="application/json", headers=headers)
        del payload, body
        return response
    data: list = body["data"]
    rest = {k: v for k, v in body.items() if k != "data"}
    response = await request.respond(content_type="application/json", headers=headers)
    await response.send(dumps(rest)[:-1] + b',"data":[')
    per_group = max(1, _GROUP_FLOATS * len(data) // max(1, n_floats))
    for start in range(0, len(data), per_group):
        group = data[start : start + per_group]
        chunk = await asyncio.to_thread(lambda g=group: b",".join(dumps(item) for item in g))
        data[start : start + per_group] = [None] * len(group)  # let the group go
        await response.send((b"," if start else b"") + chunk)
    await response.send(b"]}")
    await response.eof()
    return None
