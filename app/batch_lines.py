"""The lines of the Batch API's files (app.batches): a new batch object, the input file parsed
into requests and line errors, the output and error lines in OpenAI's shape, and the part files
a runner appends to."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
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


def check_line(n: int, raw: bytes, seen: set[str]) -> tuple[str | None, dict | None, dict | None]:
    """One input line (``n``: its 1-based number): ``(custom_id, body, None)`` for a valid
    request (its custom_id is added to ``seen``), else ``(custom_id or None, None, error)``."""
    custom_id: str | None = None
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return None, None, _line_error(n, f"line {n} is not valid JSON: {exc}")
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
        return custom_id, None, _line_error(n, problem, param)
    seen.add(custom_id)  # type: ignore[arg-type]
    return custom_id, obj["body"], None


@dataclass
class Scan:
    """The input file checked line by line (streamed): how many requests, and the bad lines."""

    total: int = 0
    errors: list[dict] = field(default_factory=list)  # batch.errors data, line numbers in them
    bad_ids: list[str | None] = field(default_factory=list)  # custom_id of each bad line
    bad_lines: set[int] = field(default_factory=set)


def scan(path: Path) -> Scan:
    """Read the file once, a line at a time (never whole), and name each bad line."""
    out, seen = Scan(), set()
    with path.open("rb") as f:
        for n, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            out.total += 1
            custom_id, _, err = check_line(n, raw, seen)
            if err is not None:
                out.errors.append(err)
                out.bad_ids.append(custom_id)
                out.bad_lines.add(n)
    return out


@dataclass
class Line:
    n: int  # 1-based line number in the input file
    custom_id: str
    body: dict


@dataclass
class Window:
    """Consecutive valid lines of the input file; ``end`` is the byte offset after the last
    line read and ``end_line`` its number (where the next window starts)."""

    lines: list[Line]
    end: int
    end_line: int


def windows(
    path: Path,
    *,
    offset: int,
    line: int,
    bad_lines: set[int],
    skip: int = 0,
    max_lines: int,
    max_items: int,
    max_bytes: int,
) -> Iterator[Window]:
    """The valid lines from byte ``offset`` (after line number ``line``) on, a window at a
    time: at most ``max_lines`` lines, ``max_items`` inputs or ``max_bytes`` of line bytes
    (the first line always fits). ``skip``: valid lines to pass over first (resuming a record
    that counted lines, not bytes)."""
    with path.open("rb") as f:
        f.seek(offset)
        n, batch, items, size = line, [], 0, 0
        while True:
            raw = f.readline()
            if not raw:
                break
            n += 1
            if n in bad_lines or not raw.strip():
                continue
            if skip:
                skip -= 1
                continue
            obj = orjson.loads(raw)
            body = obj["body"]
            x = body.get("input")
            count = len(x) if isinstance(x, list) and x and not isinstance(x[0], int) else 1
            if batch and (len(batch) >= max_lines or items + count > max_items
                          or size + len(raw) > max_bytes):  # fmt: skip
                yield Window(batch, f.tell() - len(raw), n - 1)
                batch, items, size = [], 0, 0
            batch.append(Line(n, obj["custom_id"], body))
            items, size = items + count, size + len(raw)
        if batch:
            yield Window(batch, f.tell(), n)


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
