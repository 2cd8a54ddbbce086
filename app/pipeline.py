"""The one embed pipeline, used by the server's inline path and by every worker alike:
cache read -> prepare -> compute -> cache write.

The server splits it where a request may become a job: it reads the cache and *measures* the
misses (text is tokenised; an image's token count comes from its decoded size and the model's
resize rule alone, without resampling a pixel); a large image batch is queued and a worker runs
:meth:`Pipeline.run` on its chunk, anything else goes on to :meth:`Pipeline.compute` here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from app.cache import CachePolicy, EmbeddingCache, item_key, modality
from app.engine import prompts as prompt
from app.engine.base import Embedding, EngineInput, Prepared
from app.engine.runner import BULK, INTERACTIVE
from app.errors import ApiError, InvalidRequest
from app.settings import Settings


def prompt_role(item: EngineInput) -> str:
    """What the cache key records about the prompt: the one the request chose (input_type /
    prompt_name), else the modality's default."""
    chosen = prompt.prompt_role(item)
    if chosen is not None:
        return chosen
    return "document" if modality(item) == "image" else "query"


def cache_keys(
    fingerprint: str,
    inputs: Sequence[EngineInput],
    *,
    truncate: bool,
    options: Mapping[str, Any] | None = None,
) -> list[str]:
    opts = {**(options or {}), "truncate": truncate}
    return [item_key(fingerprint, x, prompt_role=prompt_role(x), options=opts) for x in inputs]


def should_queue(measured: Sequence[Prepared], settings: Settings) -> bool:
    """More than ``--queue-threshold`` uncached images, or more uncached pixels than
    ``--queue-pixel-budget``, become a job; anything smaller is computed inline."""
    images = [p for p in measured if p.kind == "image"]
    if not images:
        return False
    if len(images) > settings.queue_threshold:
        return True
    return sum(p.pixels for p in images) > settings.queue_pixel_budget


def choose_lane(measured: Sequence[Prepared], settings: Settings) -> str:
    """The one place a request's lane is decided: few items and few tokens (queries, a page
    or two) are interactive; anything bigger, and every job chunk, is bulk."""
    small = len(measured) <= settings.interactive_max_items
    if small and sum(p.n_tokens for p in measured) <= settings.interactive_max_tokens:
        return INTERACTIVE
    return BULK


def check_request_tokens(total: int, settings: Settings) -> None:
    limit = settings.max_tokens_per_request
    if total > limit:
        raise InvalidRequest(
            f"input: the request holds {total} tokens, more than the limit of {limit} "
            "tokens per request (--max-tokens-per-request); split it",
            param="input",
        )


def tie_to(exc: ApiError, param: str) -> ApiError:
    """Point an item's error at its ``input[i]`` and say so at the start of the message."""
    if not exc.message.startswith(param):
        exc.message = f"{param}: {exc.message}"
        exc.args = (exc.message,)
    return exc.with_param(param)


def _each(fn: Any, inputs: Sequence[EngineInput], params: Sequence[str], truncate: bool):
    out = []
    for item, param in zip(inputs, params, strict=True):
        try:
            out.append(fn(item, truncate=truncate))
        except ApiError as exc:
            raise tie_to(exc, param) from None
    return out


@dataclass
class Lookup:
    """A request's items after the cache read: ``found[i]`` is the cached vector or None."""

    keys: list[str | None]
    found: list[Embedding | None]

    @property
    def hits(self) -> int:
        return sum(e is not None for e in self.found)

    @property
    def misses(self) -> list[int]:
        """The items to compute: those not found, once per distinct cache key (a request that
        repeats an input computes it once)."""
        seen: set[str] = set()
        out = []
        for i, (key, emb) in enumerate(zip(self.keys, self.found, strict=True)):
            if emb is None and (key is None or key not in seen):
                out.append(i)
                if key is not None:
                    seen.add(key)
        return out

    def fill(self, at: Sequence[int], computed: Sequence[Embedding]) -> list[Embedding]:
        """Put the computed vectors in place (repeats of an input share its vector)."""
        by_key = {}
        for i, emb in zip(at, computed, strict=True):
            self.found[i] = emb
            if self.keys[i] is not None:
                by_key[self.keys[i]] = emb
        for i, emb in enumerate(self.found):
            if emb is None:
                self.found[i] = by_key[self.keys[i]]
        return self.found  # type: ignore[return-value]


class Pipeline:
    """``engine``: the started runner (app.engine.runner.Engine); ``cache``: the Redis cache,
    or None to run without one."""

    def __init__(self, engine: Any, cache: EmbeddingCache | None) -> None:
        self.engine = engine
        self.cache = cache

    def keys(
        self,
        inputs: Sequence[EngineInput],
        policy: CachePolicy,
        *,
        truncate: bool,
        options: Mapping[str, Any] | None = None,
    ) -> list[str | None]:
        if self.cache is None or not self.cache.enabled or not (policy.read or policy.write):
            return [None] * len(inputs)
        return list(
            cache_keys(self.engine.info.fingerprint, inputs, truncate=truncate, options=options)
        )

    async def lookup(self, keys: Sequence[str | None], policy: CachePolicy) -> Lookup:
        found: list[Embedding | None] = [None] * len(keys)
        if self.cache is not None and policy.read and any(keys):
            found = await self.cache.get_many(keys)
        return Lookup(list(keys), found)

    async def measure(
        self, inputs: Sequence[EngineInput], params: Sequence[str], truncate: bool
    ) -> list[Prepared]:
        """Validate every item and count its tokens (images: no pixel is resampled)."""
        return await asyncio.to_thread(_each, self.engine.measure, inputs, params, truncate)

    async def compute(
        self,
        inputs: Sequence[EngineInput],
        params: Sequence[str],
        keys: Sequence[str | None],
        policy: CachePolicy,
        *,
        truncate: bool,
        measured: Sequence[Prepared] | None = None,
        lane: str = INTERACTIVE,
        owner: object = None,
    ) -> list[Embedding]:
        """Prepare (reusing what ``measure`` already prepared), compute on the MLX thread in
        ``lane`` and write the new vectors to the cache."""
        engine = self.engine
        with engine.incoming(len(inputs), lane) as announced:
            prepared = await asyncio.to_thread(
                _complete, engine, inputs, params, truncate, measured
            )
            pending = engine.submit(prepared, announced=announced, lane=lane, owner=owner)
        computed = await engine.wait(pending)
        if self.cache is not None and policy.write:
            await self.cache.set_many(
                {k: e for k, e in zip(keys, computed, strict=True) if k is not None}
            )
        return computed

    async def run(
        self,
        inputs: Sequence[EngineInput],
        params: Sequence[str],
        keys: Sequence[str | None],
        policy: CachePolicy,
        *,
        truncate: bool,
        lane: str = BULK,
        owner: object = None,
    ) -> list[Embedding]:
        """The whole pipeline for a list of items (a worker's chunk: bulk by default)."""
        looked = await self.lookup(keys, policy)
        miss = looked.misses
        computed = []
        if miss:
            computed = await self.compute(
                [inputs[i] for i in miss],
                [params[i] for i in miss],
                [keys[i] for i in miss],
                policy,
                truncate=truncate,
                lane=lane,
                owner=owner,
            )
        return looked.fill(miss, computed)


def _complete(
    engine: Any,
    inputs: Sequence[EngineInput],
    params: Sequence[str],
    truncate: bool,
    measured: Sequence[Prepared] | None,
) -> list[Prepared]:
    if measured is None:
        return _each(engine.prepare, inputs, params, truncate)
    out = list(measured)
    todo = [i for i, p in enumerate(out) if p.payload is None]
    done = _each(engine.prepare, [inputs[i] for i in todo], [params[i] for i in todo], truncate)
    for i, p in zip(todo, done, strict=True):
        out[i] = p
    return out
