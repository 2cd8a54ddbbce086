"""The OpenAI Batch API (``/v1/batches``) for ``/v1/embeddings``.

A batch streams its input file (one ``{"custom_id", "method", "url", "body"}`` request a
line; never read whole) a window of lines at a time: each window's lines are checked as
``POST /v1/embeddings`` checks a body and run in the bulk lane as one job on the queue
(:mod:`app.batch_runner`: RQ chunks that every worker of the model shares, through the cache),
and the answers are appended to OpenAI's output and error files. The runner is a task
of a server (the one that created the batch, or the one that resumed it). Records live in
Redis without a TTL::

    mlxemb:batch:{id}          string  {"owner", "batch": the batch object, "progress"}
    mlxemb:batch:{id}:runner   string  the runner's token (SET NX EX, refreshed each window)
    mlxemb:batch:{id}:cancel   string  unix time a cancel was asked for
    mlxemb:batches:{owner}     zset    id -> created_at (GET /v1/batches, newest first)
    mlxemb:batches:active      set     the batches not finished yet (resumed by any server)

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
from collections import deque
from typing import Any

import orjson

from app.batch_lines import Window, append, cut, invalid_line, new_batch, reset, scan, windows
from app.batch_runner import WindowRunner
from app.cache import KEY_PREFIX
from app.encoding import dumps
from app.errors import BatchNotFound, InvalidRequest
from app.files import FileStore

log = logging.getLogger(__name__)

# A window: consecutive lines checked together and run as one job (app.batch_runner); its
# end is recorded, so a resumed batch redoes at most the DEPTH windows that were in flight.
WINDOW_LINES = 1000
WINDOW_ITEMS = 1024  # inputs (a list input counts its entries)
WINDOW_BYTES = 8 * 1024 * 1024  # of input lines (images and PDFs travel inline, base64)
DEPTH = 2  # windows in flight: the next is checked and queued while the workers run one
POLL = 0.5  # s between checks for a cancel while a window runs
TERMINAL = frozenset({"completed", "failed", "cancelled", "expired"})
ACTIVE_KEY = KEY_PREFIX + "batches:active"  # set of the batches not yet finished
LOCK_TTL = 120  # s a runner's hold lasts without a refresh (a crashed server's batch waits so)
RESUME_EVERY = 30.0  # s between sweeps for active batches without a runner


def batch_key(batch_id: str) -> str:
    return f"{KEY_PREFIX}batch:{batch_id}"


def owner_index(owner: str) -> str:
    return f"{KEY_PREFIX}batches:{owner or '-'}"


def runner_key(batch_id: str) -> str:
    """Held (``SET NX EX``) by the one runner of a batch."""
    return f"{KEY_PREFIX}batch:{batch_id}:runner"


def cancel_key(batch_id: str) -> str:
    """Set (to the unix time) by POST /v1/batches/{id}/cancel; the runner polls it."""
    return f"{KEY_PREFIX}batch:{batch_id}:cancel"


class Batches:
    """Batch records in Redis and their runner tasks (in this server's event loop).

    A runner holds ``mlxemb:batch:{id}:runner`` (refreshed each window, ``LOCK_TTL``), appends
    each window's lines to ``<files>/parts/{id}.out|.err`` and then records how many lines and
    bytes are done; a batch left active (a server stopped or crashed) is resumed by whichever
    server sees it next (at its start, then every ``RESUME_EVERY`` s): the part files are cut
    back to the recorded bytes, so no line is done twice."""

    def __init__(self, files: FileStore, service: Any) -> None:
        self.files = files
        self.service = service
        self.tasks: dict[str, asyncio.Task] = {}
        self.runners: dict[str, WindowRunner] = {}  # batch id -> its window runner
        self.token = uuid.uuid4().hex
        self.parts = files.root / "parts"
        self._resumer: asyncio.Task | None = None

    @property
    def redis(self) -> Any:
        return self.files.redis

    async def _save(self, batch: dict, owner: str, progress: dict | None = None) -> None:
        """Store the runner's view, showing a cancel asked for meanwhile as ``cancelling``."""
        if batch["status"] not in TERMINAL:
            asked = await self.redis.get(cancel_key(batch["id"]))
            if asked:
                batch["status"], batch["cancelling_at"] = "cancelling", int(asked)
        rec = {"owner": owner, "batch": batch, "progress": progress or {}}
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(batch_key(batch["id"]), dumps(rec))
        if batch["status"] in TERMINAL:
            pipe.srem(ACTIVE_KEY, batch["id"])
        await pipe.execute()

    async def _record(self, batch_id: str) -> dict | None:
        raw = await self.redis.get(batch_key(batch_id)) if batch_id.startswith("batch_") else None
        return orjson.loads(raw) if raw else None

    async def get(self, batch_id: str, owner: str) -> dict:
        rec = await self._record(batch_id)
        if rec is None or rec.get("owner", "") != owner:
            raise BatchNotFound(f"no batch with id {batch_id!r}", param="batch_id")
        return rec["batch"]

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
        pipe.sadd(ACTIVE_KEY, batch["id"])
        await pipe.execute()
        self._start(batch["id"], owner)
        return batch

    def _start(self, batch_id: str, owner: str) -> None:
        task = asyncio.create_task(self._run(batch_id, owner))
        self.tasks[batch_id] = task
        task.add_done_callback(lambda _t: self.tasks.pop(batch_id, None))

    async def resume_all(self) -> None:
        """Start a runner for every active batch no live runner holds."""
        for raw in await self.redis.smembers(ACTIVE_KEY):
            batch_id = raw.decode() if isinstance(raw, bytes) else raw
            rec = await self._record(batch_id)
            if rec is None or rec["batch"]["status"] in TERMINAL:
                await self.redis.srem(ACTIVE_KEY, batch_id)
            elif batch_id not in self.tasks and not await self.redis.exists(runner_key(batch_id)):
                log.info("batch %s: resuming", batch_id)
                self._start(batch_id, rec.get("owner", ""))

    async def resume_forever(self, ready: Any) -> None:
        while not ready():
            await asyncio.sleep(0.2)
        while True:
            try:
                await self.resume_all()
            except Exception as exc:
                log.warning("batches: resume sweep failed: %s", exc)
            await asyncio.sleep(RESUME_EVERY)

    def start_resuming(self, ready: Any) -> None:
        self._resumer = asyncio.create_task(self.resume_forever(ready))

    async def list(self, owner: str, *, after: str | None, limit: int) -> dict:
        index = owner_index(owner)
        start = 0
        if after is not None:
            rank = await self.redis.zrevrank(index, after)
            start = rank + 1 if rank is not None else 0
        ids = [x.decode() for x in await self.redis.zrevrange(index, start, start + limit)]
        data = []
        for batch_id in ids[:limit]:
            rec = await self._record(batch_id)
            if rec is not None:
                data.append(rec["batch"])
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
        if batch_id not in self.tasks and not await self.redis.exists(runner_key(batch_id)):
            batch["status"], batch["cancelled_at"] = "cancelled", now  # no runner to stop
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
        if not await self.redis.set(runner_key(batch_id), self.token, nx=True, ex=LOCK_TTL):
            return  # another runner has it
        rec = await self._record(batch_id)
        if rec is None:
            return
        batch = rec["batch"]
        try:
            await self._execute(batch, owner, rec.get("progress") or {})
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
        with contextlib.suppress(Exception):
            await self.redis.delete(runner_key(batch_id))

    async def _execute(self, batch: dict, owner: str, progress: dict) -> None:
        path = await self.files.content_path(batch["input_file_id"], owner)
        checked = await asyncio.to_thread(scan, path)  # streamed; the bad lines named
        out_path, err_path = self.parts / f"{batch['id']}.out", self.parts / f"{batch['id']}.err"
        counts = batch["request_counts"]
        if not progress:  # a fresh start
            counts.update(total=checked.total, failed=len(checked.errors))
            if checked.errors:
                batch["errors"] = {"object": "list", "data": checked.errors}
            if checked.total == len(checked.errors):
                batch["status"], batch["failed_at"] = "failed", int(time.time())
                await self._save(batch, owner)
                return
            pairs = zip(checked.bad_ids, checked.errors, strict=True)
            err = b"".join(invalid_line(c, e) + b"\n" for c, e in pairs)
            await asyncio.to_thread(reset, out_path, b"")
            await asyncio.to_thread(reset, err_path, err)
            progress = {"done": 0, "offset": 0, "line": 0, "out": 0, "err": len(err)}
            batch["status"], batch["in_progress_at"] = "in_progress", int(time.time())
            await self._save(batch, owner, progress)
        else:  # resumed: drop what a window wrote past the last record
            await asyncio.to_thread(cut, out_path, progress["out"])
            await asyncio.to_thread(cut, err_path, progress["err"])
        # a record of an older server counted lines only: skip that many valid lines
        skip = 0 if "offset" in progress else progress["done"]
        progress = {"offset": 0, "line": 0, **progress}
        reader = windows(path, offset=progress["offset"], line=progress["line"],
                         bad_lines=checked.bad_lines, skip=skip, max_lines=WINDOW_LINES,
                         max_items=WINDOW_ITEMS, max_bytes=WINDOW_BYTES)  # fmt: skip
        runner = WindowRunner(self.service, batch["id"])
        self.runners[batch["id"]] = runner
        pending: deque[tuple[Window, asyncio.Task]] = deque()
        ended: str | None = None  # "cancelled" | "expired"
        more = True
        try:
            while True:
                while more and len(pending) < DEPTH:  # the next window checked meanwhile
                    window = await asyncio.to_thread(next, reader, None)
                    if window is None:
                        more = False
                    else:
                        pending.append((window, asyncio.create_task(runner.run(window.lines))))
                if not pending:
                    break
                window, task = pending[0]
                ended = await self._await_window(batch, task)
                if ended is not None:
                    break
                pending.popleft()
                results = task.result()
                outs = b"".join(line + b"\n" for ok, line in results if ok)
                errs = b"".join(line + b"\n" for ok, line in results if not ok)
                n_ok = sum(1 for ok, _ in results if ok)
                counts["completed"] += n_ok
                counts["failed"] += len(results) - n_ok
                progress = {
                    "done": progress["done"] + len(results),
                    "offset": window.end,
                    "line": window.end_line,
                    "out": progress["out"] + await asyncio.to_thread(append, out_path, outs),
                    "err": progress["err"] + await asyncio.to_thread(append, err_path, errs),
                }
                await self._save(batch, owner, progress)
        finally:
            for _, task in pending:
                task.cancel()
            await asyncio.gather(*(t for _, t in pending), return_exceptions=True)
            self.runners.pop(batch["id"], None)
        if ended == "expired":  # OpenAI: the rest fail as batch_expired
            progress = await self._expire_rest(path, checked.bad_lines, progress, counts, err_path)
        if ended is None and await self._cancel_asked(batch):
            ended = "cancelled"
        if ended is None:
            batch["status"], batch["finalizing_at"] = "finalizing", int(time.time())
            await self._save(batch, owner, progress)
        for kind, path_, field in (("output", out_path, "output_file_id"),
                                   ("error", err_path, "error_file_id")):  # fmt: skip
            name = f"{batch['id']}_{kind}.jsonl"
            if path_.exists() and path_.stat().st_size:
                f = await self.files.adopt(
                    path_, filename=name, purpose="batch_output", owner=owner
                )
                batch[field] = f["id"]
            else:
                path_.unlink(missing_ok=True)
        status = ended or "completed"
        batch["status"], batch[f"{status}_at"] = status, int(time.time())
        await self._save(batch, owner)

    async def _await_window(self, batch: dict, task: asyncio.Task) -> str | None:
        """Wait for a window, refreshing the runner's hold; ``"cancelled"`` or ``"expired"``
        when the batch ends first (checked every ``POLL`` s)."""
        while True:
            if await self._cancel_asked(batch):
                return "cancelled"
            if time.time() >= batch["expires_at"]:
                return "expired"
            await self.redis.expire(runner_key(batch["id"]), LOCK_TTL)
            await asyncio.wait({task}, timeout=POLL)
            if task.done():
                return None

    async def _expire_rest(
        self, path: Any, bad_lines: set[int], progress: dict, counts: dict, err_path: Any
    ) -> dict:
        err = {"code": "batch_expired", "message": "the batch expired (24h) first"}
        rest = windows(path, offset=progress["offset"], line=progress["line"],
                       bad_lines=bad_lines, max_lines=WINDOW_LINES, max_items=1 << 30,
                       max_bytes=WINDOW_BYTES)  # fmt: skip
        while (window := await asyncio.to_thread(next, rest, None)) is not None:
            data = b"".join(invalid_line(ln.custom_id, err) + b"\n" for ln in window.lines)
            counts["failed"] += len(window.lines)
            size = await asyncio.to_thread(append, err_path, data)
            progress = {**progress, "done": progress["done"] + len(window.lines),
                        "offset": window.end, "line": window.end_line,
                        "err": progress["err"] + size}  # fmt: skip
        return progress

    async def close(self) -> None:
        """Stop the runners (their batches stay active, for a resume) and free their locks."""
        if self._resumer is not None:
            self._resumer.cancel()
        held = list(self.tasks)
        for task in list(self.tasks.values()):
            task.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        for batch_id in held:
            with contextlib.suppress(Exception):
                if await self.redis.get(runner_key(batch_id)) == self.token.encode():
                    await self.redis.delete(runner_key(batch_id))
