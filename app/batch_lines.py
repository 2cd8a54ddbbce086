"""The lines of the Batch API's files (app.batches): a new batch object, the input file parsed
into requests and line errors, the output and error lines in OpenAI's shape, and the part files
a runner appends to."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

from app.encoding import dumps
from app.errors import InternalError

BATCH_ID_PREFIX = "batch_"
ENDPOINT = "/v1/embeddings"


def new_batch(input_file_id: str, completion_window: str, metadata: dict | None) -> dict:
    now = int(time.time())
    return {
        "id": BATCH_ID_PREFIX + uuid.uuid4().hex,
        "object": "batch",
        "endpoint": ENDPOINT,
        "errors": None,
        "input_file_id": input_file_id,
        "completion_window": completion_window,
        "status": "validating",
        "output_file_id": None,
        "error_file_id": None,
        "created_at": now,
        "in_progress_at": None,
        "expires_at": now + 24 * 3600,
        "finalizing_at": None,
        "completed_at": None,
        "failed_at": None,
        "expired_at": None,
        "cancelling_at": None,
        "cancelled_at": None,
        "request_counts": {"total": 0, "completed": 0, "failed": 0},
        "metadata": metadata,
    }


def _line_error(line: int, message: str, param: str | None = None) -> dict:
    return {"code": "invalid_request", "message": message, "param": param, "line": line}


def parse_lines(data: bytes) -> tuple[list[tuple[str, dict]], list[dict], list[str | None]]:
    """``(requests, errors, bad_custom_ids)``: the valid ``(custom_id, body)`` lines, the line
    errors (1-based line numbers), and the custom_id of each bad line where it had one."""
    good: list[tuple[str, dict]] = []
    errors: list[dict] = []
    bad_ids: list[str | None] = []
    seen: set[str] = set()
    for n, raw in enumerate(data.splitlines(), start=1):
        if not raw.strip():
            continue
        custom_id: str | None = None
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            errors.append(_line_error(n, f"line {n} is not valid JSON: {exc}"))
            bad_ids.append(None)
            continue
        problem, param = None, None
        if not isinstance(obj, dict):
            problem = f"line {n} must be a JSON object"
        else:
            cid = obj.get("custom_id")
            custom_id = cid if isinstance(cid, str) else None
            if custom_id is None:
                problem, param = f"line {n}: custom_id must be a string", "custom_id"
            elif custom_id in seen:
                problem, param = f"line {n}: duplicate custom_id {custom_id!r}", "custom_id"
                custom_id = None  # the error line must not shadow the first one's output
            elif obj.get("method", "POST") != "POST":
                problem, param = f"line {n}: method must be 'POST'", "method"
            elif obj.get("url") != ENDPOINT:
                problem = f"line {n}: url must be {ENDPOINT!r}, not {obj.get('url')!r}"
                param = "url"
            elif not isinstance(obj.get("body"), dict):
                problem, param = f"line {n}: body must be a JSON object", "body"
        if problem is not None:
            errors.append(_line_error(n, problem, param))
            bad_ids.append(custom_id)
            continue
        seen.add(custom_id)  # type: ignore[arg-type]
        good.append((custom_id, obj["body"]))  # type: ignore[arg-type]
    return good, errors, bad_ids


def _request_id() -> str:
    return "req_" + uuid.uuid4().hex


def output_line(custom_id: str | None, status: int, body: Any) -> bytes:
    return dumps(
        {
            "id": "batch_req_" + uuid.uuid4().hex,
            "custom_id": custom_id,
            "response": {"status_code": status, "request_id": _request_id(), "body": body},
            "error": None,
        }
    )


def invalid_line(custom_id: str | None, err: dict) -> bytes:
    return dumps(
        {
            "id": "batch_req_" + uuid.uuid4().hex,
            "custom_id": custom_id,
            "response": None,
            "error": {"code": err["code"], "message": err["message"]},
        }
    )


def reset(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def append(path: Path, data: bytes) -> int:
    if data:
        with path.open("ab") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return len(data)


def cut(path: Path, size: int) -> None:
    """Cut a part file back to ``size`` bytes (a resumed runner drops an unrecorded window)."""
    if not path.exists() or path.stat().st_size < size:
        raise InternalError(f"the batch part file {path} is missing or short; cannot resume")
    with path.open("r+b") as f:
        f.truncate(size)
