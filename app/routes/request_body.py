"""Reading a JSON request body, with every failure answered as an OpenAI error."""

from __future__ import annotations

from typing import Any

import orjson
from sanic import Request

from app.errors import InvalidRequest, UnsupportedMediaType


def _is_json_type(content_type: str) -> bool:
    main = content_type.split(";", 1)[0].strip().lower()
    return main == "application/json" or main.endswith("+json")


def read_json(request: Request) -> Any:
    """The decoded body. Any Content-Type is accepted when the body is JSON (``curl -d`` sends
    form-urlencoded); a body that is not JSON is 400 with a JSON type, 415 with another one."""
    body = request.body or b""
    content_type = request.headers.get("content-type", "")
    if not body.strip():
        raise InvalidRequest(
            "the request body is empty; send a JSON object (Content-Type: application/json)"
        )
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if content_type and not _is_json_type(content_type):
            raise UnsupportedMediaType(
                f"unsupported Content-Type {content_type!r}: send a JSON object with "
                "Content-Type: application/json"
            ) from None
        raise InvalidRequest(f"the request body is not valid JSON: {exc}") from None
