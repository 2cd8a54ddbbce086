"""The ``pooling`` option of /v1/embeddings: pooled vectors are cached under their own key
(the item key with the pooling spec in its options); a miss embeds the item through the
ordinary pipeline (whose own cache then holds the original vectors) and pools it."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING

from app.cache import CachePolicy
from app.engine.base import Embedding
from app.errors import InvalidRequest
from app.pooling import pool_embedding, unpack
from app.protocol import PoolingSpec

if TYPE_CHECKING:
    from app.inputs import ResolvedItem
    from app.service import Embedded, EmbeddingService


def check_pooling(spec: PoolingSpec, kind: str) -> None:
    del spec  # every method needs a multi-vector model
    if kind != "multi_vector":
        raise InvalidRequest(
            "pooling applies to multi-vector models only; this model returns one vector per input",
            param="pooling",
        )


def pool_all(embeddings: Sequence[Embedding], spec: PoolingSpec) -> list[Embedding]:
    return [pool_embedding(e, spec.method, spec.factor) for e in embeddings]


async def embed_pooled(
    service: EmbeddingService,
    items: Sequence[ResolvedItem],
    policy: CachePolicy,
    truncate: bool,
    spec: PoolingSpec,
) -> Embedded:
    from app.service import Embedded

    check_pooling(spec, service.model_info().kind)
    pipeline = service.pipeline
    inputs = [r.item for r in items]
    keys = pipeline.keys(inputs, policy, truncate=truncate, options={"pooling": spec.key()})
    looked = await pipeline.lookup(keys, policy)
    miss = looked.misses
    raw = Embedded([], 0)
    if miss:
        for i in miss:  # rows_cols needs an image grid: fail before computing anything
            if spec.method == "rows_cols" and getattr(items[i].item, "image", None) is None:
                raise InvalidRequest(
                    f"{items[i].param}: pooling method 'rows_cols' needs an image (a page)",
                    param="pooling",
                )
        raw = await service.embed_items([items[i] for i in miss], policy, truncate)
        pooled = await asyncio.to_thread(pool_all, raw.embeddings, spec)
        cache = pipeline.cache
        if cache is not None and policy.write:
            await cache.set_many({keys[i]: e for i, e in zip(miss, pooled, strict=True) if keys[i]})
    else:
        pooled = []
    hits = looked.hits
    found = [unpack(e) for e in looked.fill(miss, pooled)]
    # no forward ran when every missing pooled vector was pooled from cached originals
    cached = len(items) if miss and raw.cached == len(miss) else hits + raw.cached
    return Embedded(found, cached, raw.job_id, raw.lane)


async def pool_result(embeddings: Sequence[Embedding], spec: dict) -> list[Embedding]:
    """A job's stored vectors, pooled as its request asked."""
    pooled = await asyncio.to_thread(pool_all, embeddings, PoolingSpec.model_validate(spec))
    return [unpack(e) for e in pooled]
