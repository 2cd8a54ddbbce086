"""After the cache, where each request's work runs: the cache is read per item, only the misses
are prepared, and they are computed inline by the engine or — when they are many images (more
than ``--queue-threshold``, or more pixels than ``--queue-pixel-budget``) — as an RQ job that
this request awaits without blocking the event loop. New vectors are written back."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from app.cache import CachePolicy, EmbeddingCache, item_key, modality
from app.engine.base import Embedding, EngineInput, Prepared
from app.engine.prompts import prompt_role
from app.errors import ApiError, InvalidRequest, JobFailed, QueueUnavailable
from app.job_items import JobItem
from app.jobs import JobStore, should_queue
from app.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Embedded:
    embeddings: list[Embedding]
    cached: int = 0
    computed: int = 0
    job_id: str | None = None

    @property
    def cache_status(self) -> str:
        """The X-Cache header: hit (all from cache), miss (none), partial."""
        if self.computed == 0:
            return "hit"
        return "miss" if self.cached == 0 else "partial"


def default_prompt_role(item: EngineInput) -> str:
    role = prompt_role(item)  # the prompt the request chose (input_type / prompt_name)
    if role is not None:
        return role
    return "document" if modality(item) == "image" else "query"


def cache_keys(
    fingerprint: str,
    inputs: Sequence[EngineInput],
    *,
    truncate: bool,
    options: Mapping[str, Any] | None = None,
) -> list[str]:
    opts = {**(options or {}), "truncate": truncate}
    return [
        item_key(fingerprint, x, prompt_role=default_prompt_role(x), options=opts) for x in inputs
    ]


async def embed_inputs(
    inputs: Sequence[EngineInput],
    *,
    engine: Any,
    settings: Settings,
    cache: EmbeddingCache | None = None,
    jobs: JobStore | None = None,
    policy: CachePolicy | None = None,
    options: Mapping[str, Any] | None = None,
    truncate: bool = False,
    request_meta: Mapping[str, Any] | None = None,
    params: Sequence[str] | None = None,
) -> Embedded:
    """Embed a request's inputs: cache lookup per item, compute only the misses — inline, or
    as a job (waited for) when they are many images — and store the new vectors.

    ``options`` are folded into the cache key: pass everything that changes the engine's
    output. Errors from an item carry its ``params[i]`` (default ``input[i]``)."""
    policy = policy or CachePolicy()
    n = len(inputs)
    params = list(params) if params is not None else [f"input[{i}]" for i in range(n)]
    use_cache = cache is not None and cache.enabled and (policy.read or policy.write)
    keys: list[str | None] = [None] * n
    if use_cache:
        keys = list(cache_keys(engine.info.fingerprint, inputs, truncate=truncate, options=options))
    found: list[Embedding | None] = [None] * n
    if use_cache and policy.read:
        assert cache is not None
        found = await cache.get_many(keys)
    miss = [i for i in range(n) if found[i] is None]
    out = Embedded(embeddings=[], cached=n - len(miss), computed=len(miss))
    if miss:
        with engine.incoming(len(miss)) as announced:
            prepared = await asyncio.to_thread(
                prepare_items, engine, [inputs[i] for i in miss], [params[i] for i in miss],
                truncate,
            )  # fmt: skip
            tokens = sum(p.n_tokens for p in prepared) + sum(e.n_tokens for e in found if e)
            check_request_tokens(tokens, settings)
            queued = jobs is not None and should_queue(prepared, settings)
            # inline: queue the items and withdraw the announcement in one step
            pending = None if queued else engine.submit(prepared, announced=announced)
        computed: list[Embedding] | None = None
        if queued:
            assert jobs is not None
            write_keys = keys if (use_cache and policy.write) else [None] * n
            computed, out.job_id = await _via_job(
                jobs, inputs, miss, write_keys, request_meta, truncate
            )
            if computed is None:  # the queue is down: compute inline
                pending = engine.submit(prepared)
        if computed is None:
            assert pending is not None
            computed = await engine.wait(pending)
            if use_cache and policy.write:
                assert cache is not None
                await cache.set_many(
                    {keys[i]: e for i, e in zip(miss, computed, strict=True) if keys[i]}
                )
        for i, emb in zip(miss, computed, strict=True):
            found[i] = emb
    out.embeddings = found  # type: ignore[assignment]
    return out


def check_request_tokens(total: int, settings: Settings) -> None:
    limit = settings.max_tokens_per_request
    if total > limit:
        raise InvalidRequest(
            f"input: the request holds {total} tokens, more than the limit of {limit} "
            "tokens per request (--max-tokens-per-request); split it",
            param="input",
        )


def prepare_items(
    engine: Any, inputs: Sequence[EngineInput], params: Sequence[str], truncate: bool
) -> list[Prepared]:
    """Validate + preprocess each item (any thread); an error names its item's param."""
    out = []
    for item, param in zip(inputs, params, strict=True):
        try:
            out.append(engine.prepare(item, truncate=truncate))
        except ApiError as exc:
            raise tie_to(exc, param) from None
    return out


def tie_to(exc: ApiError, param: str) -> ApiError:
    """Point an item's error at its ``input[i]`` and say so at the start of the message."""
    if not exc.message.startswith(param):
        exc.message = f"{param}: {exc.message}"
        exc.args = (exc.message,)
    return exc.with_param(param)


async def _via_job(
    jobs: JobStore,
    inputs: Sequence[EngineInput],
    miss: Sequence[int],
    keys: Sequence[str | None],
    request_meta: Mapping[str, Any] | None,
    truncate: bool,
) -> tuple[list[Embedding] | None, str | None]:
    """Run the misses as a job and wait; ``(None, None)`` when the queue is down (then the
    caller computes inline)."""
    items = [JobItem(inputs[i], keys[i], index=i) for i in miss]
    try:
        st = await jobs.submit(items, {**(request_meta or {}), "sync": True}, truncate=truncate)
    except QueueUnavailable as exc:
        if not jobs.down_logged:
            log.warning("job queue unavailable (%s); computing large requests inline", exc.message)
            jobs.down_logged = True
        return None, None
    jobs.down_logged = False
    try:
        return await jobs.wait(st.id), st.id
    except JobFailed as exc:
        raise getattr(exc, "cause", exc) from None
    except asyncio.CancelledError:
        # The client went away: stop the job's remaining chunks.
        with contextlib.suppress(Exception):
            await asyncio.shield(jobs.cancel(st.id))
        raise
