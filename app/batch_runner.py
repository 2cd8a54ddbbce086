"""One window of a batch's lines (app.batches) in the bulk lane, as ONE job on the queue.

Every line is first checked as ``POST /v1/embeddings`` would check its body (the request
shape, the model, the inputs resolved, the cache read, every missed item measured, the
request's token limit): a line that fails gets its error-file line with the very 4xx body the
endpoint would answer, the others go on. The valid lines' missed items (deduplicated by cache
key across the window) are submitted together as one job (:meth:`app.jobs.client.JobClient.
submit`: RQ chunks in an RQ Group, retried by RQ, on the model's queue), so every worker of
the model shares the batch; the workers run the shared pipeline and write the cache, so a
re-run batch costs Redis reads only. The items travel in the job (text, token ids, image
bytes): workers never read the batch's files. The vectors are split back per line into the
body ``/v1/embeddings`` gives (:meth:`app.service.EmbeddingService.response_body`).

No live worker (``--no-local-worker`` and none started), or a job that fails on the server's
side (its chunks' retries spent, or orphaned after ``--orphan-timeout``): the window is
computed here, in the engine's bulk lane, so a batch always progresses.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from app.batch_lines import Line, output_line
from app.cache import CachePolicy
from app.engine.base import Embedding, Prepared
from app.engine.runner import BULK
from app.errors import ApiError, InternalError, InvalidRequest, Overloaded, QueueUnavailable
from app.jobs.items import JobItem
from app.pipeline import Lookup, check_request_tokens, tie_to
from app.protocol import EmbeddingRequest, parse_embedding_request

if TYPE_CHECKING:
    from app.inputs import ResolvedItem
    from app.model_router import ModelRouter
    from app.service import EmbeddingService

log = logging.getLogger(__name__)

# A job chunk of text holds about this many tokens (between --job-chunk-size and
# CHUNK_MAX_ITEMS items): big enough that RQ's per-chunk cost is small next to the forward,
# small enough that a window is several chunks (workers share it).
CHUNK_TOKENS = 2048
CHUNK_MAX_ITEMS = 128

Outcome = tuple[bool, bytes]  # (ok, the output or error line)


@dataclass
class _Checked:
    """A valid line: its request, resolved items, cache keys and cached vectors so far."""

    index: int  # in the window
    line: Line
    service: EmbeddingService  # the service of the line's model
    req: EmbeddingRequest
    items: list[ResolvedItem]
    keys: list[str | None]
    found: list[Embedding | None]
    measured: list[Prepared]


def _error(line: Line, exc: BaseException) -> Outcome:
    if not isinstance(exc, ApiError):
        log.error("batch line %s failed", line.custom_id, exc_info=exc)
        exc = InternalError(f"internal error: {type(exc).__name__}")
    return False, output_line(line.custom_id, exc.status, exc.body())


def _measure_lines(engine: Any, todo: Sequence[tuple[list, list[str]]], truncate: bool) -> list:
    """Measure each line's items (one thread hop for the window): a list of Prepared, or the
    line's ApiError (tied to its ``input[i]`` like the endpoint's)."""
    out: list = []
    for inputs, params in todo:
        try:
            done = []
            for x, param in zip(inputs, params, strict=True):
                try:
                    done.append(engine.measure(x, truncate=truncate))
                except ApiError as exc:
                    raise tie_to(exc, param) from None
            out.append(done)
        except ApiError as exc:
            out.append(exc)
    return out


class WindowRunner:
    """Runs windows of one batch; each line goes to the service of its ``model``
    (``services``: the server's models), and a window's lines are grouped by model."""

    def __init__(self, services: ModelRouter, batch_id: str) -> None:
        self.services = services
        self.batch_id = batch_id
        self.jobs_run: list[str] = []  # the ids of the jobs submitted (tests, logs)

    async def run(self, lines: Sequence[Line]) -> list[Outcome]:
        """Every line's outcome, in order."""
        out: list[Outcome | None] = [None] * len(lines)
        policy = self.services.first.cache_policy(None)
        checked = await asyncio.gather(
            *(self._resolve(i, ln, policy) for i, ln in enumerate(lines))
        )
        groups: dict[tuple[str, bool], list[_Checked]] = {}
        for i, c in enumerate(checked):
            if isinstance(c, _Checked):
                groups.setdefault((c.req.model, c.req.truncate), []).append(c)
            else:
                out[i] = c
        for (_, truncate), group in groups.items():
            for index, outcome in await self._group(group, policy, truncate):
                out[index] = outcome
        return out  # type: ignore[return-value]

    async def _resolve(self, i: int, line: Line, policy: CachePolicy) -> _Checked | Outcome:
        try:
            req = parse_embedding_request(line.body)
            service = self.services.for_model(req.model)
            items = await service.resolve_request(req)
            if req.pooling is not None:
                self._check_pooling(service, req, items)
            inputs = [r.item for r in items]
            keys = service.pipeline.keys(inputs, policy, truncate=req.truncate)
        except Exception as exc:
            return _error(line, exc)
        return _Checked(i, line, service, req, items, keys, [None] * len(keys), [])

    def _check_pooling(
        self, service: EmbeddingService, req: EmbeddingRequest, items: list[ResolvedItem]
    ) -> None:
        from app.pooled_embed import check_pooling

        assert req.pooling is not None
        check_pooling(req.pooling, service.model_info().kind)
        if req.pooling.method == "rows_cols":
            for r in items:
                if getattr(r.item, "image", None) is None:
                    raise InvalidRequest(
                        f"{r.param}: pooling method 'rows_cols' needs an image (a page)",
                        param="pooling",
                    )

    async def _group(
        self, group: list[_Checked], policy: CachePolicy, truncate: bool
    ) -> list[tuple[int, Outcome]]:
        """The lines of one model and ``truncate`` value: measured, then their misses as one
        job."""
        out: list[tuple[int, Outcome]] = []
        service = group[0].service
        pipeline = service.pipeline
        found_all = (await pipeline.lookup([k for c in group for k in c.keys], policy)).found
        at = 0
        for c in group:  # one cache read for the window
            c.found, at = found_all[at : at + len(c.keys)], at + len(c.keys)
        todo = []
        for c in group:
            miss = [j for j, e in enumerate(c.found) if e is None]
            todo.append(([c.items[j].item for j in miss], [c.items[j].param for j in miss]))
        engine = pipeline.engine
        measured = await asyncio.to_thread(_measure_lines, engine, todo, truncate)
        valid: list[_Checked] = []
        for c, m in zip(group, measured, strict=True):
            try:
                if isinstance(m, ApiError):
                    raise m
                cached_tokens = sum(e.n_tokens for e in c.found if e is not None)
                check_request_tokens(sum(p.n_tokens for p in m) + cached_tokens,
                                     service.settings)  # fmt: skip
            except ApiError as exc:
                out.append((c.index, _error(c.line, exc)))
                continue
            c.measured = m
            valid.append(c)
        if not valid:
            return out
        # the window's items in one list: the misses (once per cache key) become one job
        keys = [k for c in valid for k in c.keys]
        found = [e for c in valid for e in c.found]
        look = Lookup(keys, list(found))
        miss = look.misses
        if miss:
            inputs = [r.item for c in valid for r in c.items]
            params = [r.param for c in valid for r in c.items]
            prepared = [p for c in valid for p in c.measured]
            try:
                computed = await self._compute(
                    service, [inputs[i] for i in miss], [params[i] for i in miss],
                    [keys[i] for i in miss], policy, truncate, prepared,
                )  # fmt: skip
            except ApiError as exc:
                if exc.status >= 500:
                    raise
                # an item only a worker could find wrong: each line alone, for its own error
                log.warning("batch %s: a window's job failed (%s); lines one by one",
                            self.batch_id, exc.message)  # fmt: skip
                return out + list(zip([c.index for c in valid],
                                      await asyncio.gather(*(self._alone(c) for c in valid)),
                                      strict=True))  # fmt: skip
            embeddings = look.fill(miss, computed)
        else:
            embeddings = found  # type: ignore[assignment]
        at = 0
        for c in valid:
            mine = embeddings[at : at + len(c.items)]
            at += len(c.items)
            try:
                out.append((c.index, (True, await self._body(c, mine))))  # type: ignore[arg-type]
            except Exception as exc:
                out.append((c.index, _error(c.line, exc)))
        return out

    async def _body(self, c: _Checked, embeddings: list[Embedding]) -> bytes:
        if c.req.pooling is not None:
            from app.pooled_embed import pool_result

            embeddings = await pool_result(embeddings, c.req.pooling.model_dump())
        body = c.service.response_body(c.req, c.items, embeddings)
        return output_line(c.line.custom_id, 200, body)

    async def _alone(self, c: _Checked) -> Outcome:
        """One line as POST /v1/embeddings (the fallback that names a bad line's error)."""
        try:
            result = await c.service.embed(c.req)
        except Exception as exc:
            return _error(c.line, exc)
        return True, output_line(c.line.custom_id, 200, result.body)

    async def _compute(
        self,
        service: EmbeddingService,
        inputs: list,
        params: list[str],
        keys: list[str | None],
        policy: CachePolicy,
        truncate: bool,
        prepared: Sequence[Prepared],
    ) -> list[Embedding]:
        """The misses as one job on the model's queue; here in the bulk lane when no worker
        is live or the job failed on the server's side."""
        computed = await self._via_job(service, inputs, params, keys, policy, truncate, prepared)
        if computed is not None:
            return computed
        loop = asyncio.get_running_loop()
        delay, deadline = 0.05, loop.time() + service.settings.job_timeout
        while True:
            try:
                return await service.pipeline.compute(inputs, params, keys, policy,
                                                      truncate=truncate, lane=BULK,
                                                      owner=self.batch_id)  # fmt: skip
            except Overloaded:  # the bulk lane is full: a batch waits its turn
                if loop.time() + delay > deadline:
                    raise
                await asyncio.sleep(delay)
                delay = min(1.0, delay * 2)

    def _chunk_size(self, service: EmbeddingService, prepared: Sequence[Prepared]) -> int:
        least = max(1, service.settings.job_chunk_size)
        if any(p.kind == "image" for p in prepared) or not prepared:
            return least
        per_item = max(1, sum(p.n_tokens for p in prepared) // len(prepared))
        return max(least, min(CHUNK_MAX_ITEMS, CHUNK_TOKENS // per_item))

    async def _via_job(
        self,
        service: EmbeddingService,
        inputs: list,
        params: list[str],
        keys: list[str | None],
        policy: CachePolicy,
        truncate: bool,
        prepared: Sequence[Prepared],
    ) -> list[Embedding] | None:
        backends = service.backends
        jobs = backends.jobs_for(service.model_name) if backends is not None else None
        if jobs is None:
            return None
        try:
            if not await jobs.has_workers():
                log.info("batch %s: no live worker; a window computed in the server", self.batch_id)
                return None
            items = [JobItem.of(x, k if policy.write else None, p)
                     for x, k, p in zip(inputs, keys, params, strict=True)]  # fmt: skip
            meta = {"sync": True, "truncate": truncate, "cache_read": False,
                    "batch": self.batch_id}  # fmt: skip
            submit = asyncio.ensure_future(
                jobs.submit(items, meta, chunk_size=self._chunk_size(service, prepared))
            )
            try:
                st = await asyncio.shield(submit)
            except asyncio.CancelledError:  # cancelled while queueing: cancel what was queued
                with contextlib.suppress(Exception):
                    await jobs.cancel((await submit).id)
                raise
        except QueueUnavailable as exc:
            log.warning("batch %s: queue unavailable (%s); computing here", self.batch_id, exc)
            return None
        self.jobs_run.append(st.id)
        try:
            computed = await jobs.wait(st.id)
            with contextlib.suppress(ApiError):
                await jobs.drop_result(st.id)  # no window's vectors left in Redis beyond the cache
            return computed
        except asyncio.CancelledError:  # the batch was cancelled or the server stops
            with contextlib.suppress(Exception):
                await asyncio.shield(jobs.cancel(st.id))
            raise
        except ApiError as exc:
            if exc.status < 500:
                raise
            log.warning("batch %s: job %s failed (%s); computing the window here",
                        self.batch_id, st.id, exc.message)  # fmt: skip
            return None
