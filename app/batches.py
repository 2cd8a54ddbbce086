"""The OpenAI Batch API (``/v1/batches``) for ``/v1/embeddings``.

A batch reads its input file (one ``{"custom_id", "method", "url", "body"}`` request a line),
runs each line's body as the same request as ``POST /v1/embeddings`` through
:meth:`app.service.EmbeddingService.embed` (cache, engine, and the job queue for big bodies),
a window of lines at a time, and writes OpenAI's output and error files. The runner is a task
of the server that created the batch. Records live in Redis without a TTL::

    mlxemb:batch:{id}         string  the batch object (JSON) plus its owner
    mlxemb:batches:{owner}    zset    id -> created_at (GET /v1/batches, newest first)

A line that is not a valid request (bad JSON, no ``custom_id``, wrong ``method`` or ``url``,
a body that is not an object) is named by its line number in the batch's ``errors`` and gets
an error-file line; a line whose body fails (wrong model, bad input) gets an error-file line
with the 4xx response. The good lines still run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import Any

import orjson

from app.cache import KEY_PREFIX
from app.encoding import dumps
from app.errors import ApiError, BatchNotFound, InternalError, InvalidRequest
from app.files import FileStore
from app.protocol import parse_embedding_request

log = logging.getLogger(__name__)

BATCH_ID_PREFIX = "batch_"
ENDPOINT = "/v1/embeddings"
WINDOW = 16  # lines in flight at once (the engine batches across them)
TERMINAL = frozenset({"completed", "failed", "cancelled", "expired"})


def batch_key(batch_id: str) -> str:
    return f"{KEY_PREFIX}batch:{batch_id}"


def owner_index(owner: str) -> str:
    return f"{KEY_PREFIX}batches:{owner or '-'}"


def cancel_key(batch_id: str) -> str:
    """Set (to the unix time) by POST /v1/batches/{id}/cancel; the runner polls it."""
    return f"{KEY_PREFIX}batch:{batch_id}:cancel"


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


class Batches:
    """Batch records in Redis and their runner tasks (in this server's event loop)."""

    def __init__(self, files: FileStore, service: Any) -> None:
        self.files = files
        self.service = service
        self.tasks: dict[str, asyncio.Task] = {}

    @property
    def redis(self) -> Any:
        return self.files.redis

    async def _save(self, batch: dict, owner: str) -> None:
        """Store the runner's view, showing a cancel asked for meanwhile as ``cancelling``."""
        if batch["status"] not in TERMINAL:
            asked = await self.redis.get(cancel_key(batch["id"]))
            if asked:
                batch["status"], batch["cancelling_at"] = "cancelling", int(asked)
        await self.redis.set(batch_key(batch["id"]), dumps({"owner": owner, "batch": batch}))

    async def _load(self, batch_id: str) -> tuple[dict, str] | None:
        raw = await self.redis.get(batch_key(batch_id)) if batch_id.startswith("batch_") else None
        if not raw:
            return None
        rec = orjson.loads(raw)
        return rec["batch"], rec.get("owner", "")

    async def get(self, batch_id: str, owner: str) -> dict:
        found = await self._load(batch_id)
        if found is None or found[1] != owner:
            raise BatchNotFound(f"no batch with id {batch_id!r}", param="batch_id")
        return found[0]

    async def create(
        self, input_file_id: str, completion_window: str, metadata: dict | None, owner: str
    ) -> dict:
        meta = await self.files.meta(input_file_id, owner)  # 404 for another key's file
        if meta.get("purpose") != "batch":
            raise InvalidRequest(
                f"file {input_file_id!r} has purpose {meta.get('purpose')!r}, not 'batch'",
                param="input_file_id",
            )
        batch = new_batch(input_file_id, completion_window, metadata)
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(batch_key(batch["id"]), dumps({"owner": owner, "batch": batch}))
        pipe.zadd(owner_index(owner), {batch["id"]: time.time()})
        await pipe.execute()
        task = asyncio.create_task(self._run(batch["id"], owner))
        self.tasks[batch["id"]] = task
        task.add_done_callback(lambda _t, b=batch["id"]: self.tasks.pop(b, None))
        return batch

    async def list(self, owner: str, *, after: str | None, limit: int) -> dict:
        index = owner_index(owner)
        start = 0
        if after is not None:
            rank = await self.redis.zrevrank(index, after)
            start = rank + 1 if rank is not None else 0
        ids = [x.decode() for x in await self.redis.zrevrange(index, start, start + limit)]
        data = []
        for batch_id in ids[:limit]:
            found = await self._load(batch_id)
            if found is not None:
                data.append(found[0])
        return {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": len(ids) > limit,
        }

    async def cancel(self, batch_id: str, owner: str) -> dict:
        batch = await self.get(batch_id, owner)
        if batch["status"] in TERMINAL or batch["status"] == "cancelling":
            return batch
        now = int(time.time())
        await self.redis.set(cancel_key(batch_id), now)
        batch["status"], batch["cancelling_at"] = "cancelling", now
        if batch_id not in self.tasks:  # no runner here (a restart): nothing left to stop
            batch["status"], batch["cancelled_at"] = "cancelled", now
            await self._save(batch, owner)
        return batch  # else the runner stops at its next window and records it

    async def _cancel_asked(self, batch: dict) -> bool:
        """Whether a cancel was asked for (recorded in ``batch`` as ``cancelling_at``)."""
        asked = await self.redis.get(cancel_key(batch["id"]))
        if asked and not batch["cancelling_at"]:
            batch["cancelling_at"] = int(asked)
        return bool(asked)

    # ---- the runner ----------------------------------------------------------------------------
    async def _run(self, batch_id: str, owner: str) -> None:
        batch, _ = await self._load(batch_id) or ({}, owner)
        try:
            await self._execute(batch, owner)
        except Exception as exc:
            log.error("batch %s failed", batch_id, exc_info=exc)
            batch["status"], batch["failed_at"] = "failed", int(time.time())
            batch["errors"] = {
                "object": "list",
                "data": [{"code": "internal_error", "message": str(exc), "param": None,
                          "line": None}],
            }  # fmt: skip
            with contextlib.suppress(Exception):
                await self._save(batch, owner)

    async def _execute(self, batch: dict, owner: str) -> None:
        data = await self.files.content(batch["input_file_id"], owner)
        good, errors, bad_ids = parse_lines(data)
        counts = batch["request_counts"]
        counts.update(total=len(good) + len(errors), failed=len(errors))
        if errors:
            batch["errors"] = {"object": "list", "data": errors}
        err_lines = [invalid_line(c, e) for c, e in zip(bad_ids, errors, strict=True)]
        if not good:
            batch["status"], batch["failed_at"] = "failed", int(time.time())
            await self._save(batch, owner)
            return
        batch["status"], batch["in_progress_at"] = "in_progress", int(time.time())
        await self._save(batch, owner)
        out_lines: list[bytes] = []
        cancelled = False
        for start in range(0, len(good), WINDOW):
            if await self._cancel_asked(batch):
                cancelled = True
                break
            window = good[start : start + WINDOW]
            for ok, line in await asyncio.gather(*(self._one(c, b) for c, b in window)):
                (out_lines if ok else err_lines).append(line)
                counts["completed" if ok else "failed"] += 1
            await self._save(batch, owner)
        cancelled = cancelled or await self._cancel_asked(batch)
        if not cancelled:
            batch["status"], batch["finalizing_at"] = "finalizing", int(time.time())
            await self._save(batch, owner)
        batch["output_file_id"] = await self._write(batch["id"], "output", out_lines, owner)
        batch["error_file_id"] = await self._write(batch["id"], "error", err_lines, owner)
        now = int(time.time())
        if cancelled:
            batch["status"], batch["cancelled_at"] = "cancelled", now
        else:
            batch["status"], batch["completed_at"] = "completed", now
        await self._save(batch, owner)

    async def _write(self, batch_id: str, kind: str, lines: list[bytes], owner: str) -> str | None:
        if not lines:
            return None
        data = b"\n".join(lines) + b"\n"
        name = f"{batch_id}_{kind}.jsonl"
        f = await self.files.create(data, filename=name, purpose="batch_output", owner=owner)
        return f["id"]

    async def _one(self, custom_id: str, body: dict) -> tuple[bool, bytes]:
        """One line as POST /v1/embeddings: ``(ok, output or error line)``."""
        try:
            req = parse_embedding_request(body)
            result = await self.service.embed(req)
        except ApiError as exc:
            return False, output_line(custom_id, exc.status, exc.body())
        except Exception as exc:
            log.error("batch line %s failed", custom_id, exc_info=exc)
            err = InternalError(f"internal error: {type(exc).__name__}")
            return False, output_line(custom_id, err.status, err.body())
        return True, output_line(custom_id, 200, result.body)

    async def close(self) -> None:
        for task in list(self.tasks.values()):
            task.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)
