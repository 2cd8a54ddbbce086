"""The embeddings use case, independent of HTTP: check the model, resolve inputs, prepare,
compute, and build the OpenAI response body.

``_compute`` is the seam for the Redis cache (look items up before compute, store after) and the
RQ queue (dispatch big image batches to workers).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from app.encoding import apply_dimensions, check_dimensions, embedding_item, floats_in
from app.engine.base import Embedding, ModelInfo, Prepared
from app.errors import ApiError, InternalError, InvalidRequest, ModelNotFound, ModelNotReady
from app.protocol import EmbeddingRequest
from app.settings import Settings

if TYPE_CHECKING:
    from app.engine.runner import Engine
    from app.inputs import ResolvedItem

log = logging.getLogger(__name__)

# Responses holding more floats than this are serialised off the event loop.
INLINE_SERIALISE_FLOATS = 200_000

# X-Cache values
CACHE_OFF = "OFF"  # no cache configured
CACHE_BYPASS = "BYPASS"  # the client asked not to use it
CACHE_MISS = "MISS"
CACHE_HIT = "HIT"
CACHE_PARTIAL = "PARTIAL"


class InputResolverLike(Protocol):
    max_image_pixels_for_model: int | None

    async def resolve(self, raw_input: object) -> list[ResolvedItem]: ...

    async def aclose(self) -> None: ...


@dataclass
class EmbeddingResult:
    """What ``EmbeddingService.embed`` returns: the response body (numpy arrays in it are
    serialised by ``app.encoding.dumps``) plus the X-Cache status."""

    body: dict[str, Any]
    cache: str = CACHE_OFF
    n_floats: int = 0
    timings: dict[str, float] = field(default_factory=dict)


class EmbeddingService:
    def __init__(self, settings: Settings, engine: Engine, resolver: InputResolverLike) -> None:
        self.settings = settings
        self.engine = engine
        self.resolver = resolver

    @property
    def model_name(self) -> str:
        return self.settings.model_name

    def check_model(self, model: str) -> None:
        if model != self.model_name:
            raise ModelNotFound(
                f"the model {model!r} does not exist on this server; it serves {self.model_name!r}",
                param="model",
            )

    def model_info(self) -> ModelInfo:
        """The loaded model's info (ModelNotReady 503 while loading); configures the resolver."""
        error = getattr(self.engine, "load_error", None)
        if error is not None:
            raise ModelNotReady(
                f"the model failed to load ({type(error).__name__}: {error}); see the server log"
            )
        info = self.engine.info
        if getattr(self.resolver, "max_image_pixels_for_model", 0) is None:
            max_pixels = info.extra.get("max_pixels")
            if max_pixels:
                self.resolver.max_image_pixels_for_model = int(max_pixels)
        return info

    async def embed(self, req: EmbeddingRequest, *, no_cache: bool = False) -> EmbeddingResult:
        self.check_model(req.model)
        info = self.model_info()
        check_dimensions(req.dimensions, info)
        items = await self.resolver.resolve(req.input)
        if not items:  # the resolver rejects empty input; keep the invariant here too
            raise InvalidRequest("input: must not be empty", param="input")
        prepared = await self._prepare(items, truncate=req.truncate)
        embeddings, cache = await self._compute(prepared, items, no_cache=no_cache)
        if len(embeddings) != len(items):
            raise InternalError(
                f"the model returned {len(embeddings)} embeddings for {len(items)} inputs"
            )
        return self._result(req, info, items, embeddings, cache)

    # ---- steps -------------------------------------------------------------------------------
    async def _prepare(self, items: list[ResolvedItem], *, truncate: bool) -> list[Prepared]:
        """Tokenise / preprocess every item off the event loop, then check the request cap.

        The batcher is told these items are coming, so a batch already forming may wait for
        them (only for ``max_wait_ms``, and only while they are announced)."""
        with self.engine.incoming(len(items)):
            prepared = await asyncio.to_thread(self._prepare_all, items, truncate)
        total = sum(p.n_tokens for p in prepared)
        limit = self.settings.max_tokens_per_request
        if total > limit:
            raise InvalidRequest(
                f"input: the request holds {total} tokens, more than the limit of {limit} "
                "tokens per request (--max-tokens-per-request); split it",
                param="input",
            )
        return prepared

    def _prepare_all(self, items: list[ResolvedItem], truncate: bool) -> list[Prepared]:
        out = []
        for resolved in items:
            try:
                out.append(self.engine.prepare(resolved.item, truncate=truncate))
            except ApiError as exc:
                raise _tie_to(exc, resolved.param) from None
        return out

    async def _compute(
        self, prepared: list[Prepared], items: list[ResolvedItem], *, no_cache: bool
    ) -> tuple[list[Embedding], str]:
        """Embeddings for ``prepared`` (parallel to ``items``), plus the X-Cache status.

        Seam: the cache looks items up here before compute and stores misses after; big image
        batches go to the RQ queue from here."""
        embeddings = await self.engine.embed(prepared)
        return embeddings, CACHE_BYPASS if no_cache else CACHE_OFF

    def _result(
        self,
        req: EmbeddingRequest,
        info: ModelInfo,
        items: list[ResolvedItem],
        embeddings: list[Embedding],
        cache: str,
    ) -> EmbeddingResult:
        vectors = [apply_dimensions(e.vectors, req.dimensions) for e in embeddings]
        data = []
        for index, (resolved, emb, vec) in enumerate(zip(items, embeddings, vectors, strict=True)):
            data.append(embedding_item(vec, index, req.encoding_format, _extensions(resolved, emb)))
        tokens = sum(int(e.n_tokens) for e in embeddings)
        body = {
            "object": "list",
            "data": data,
            "model": self.model_name,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return EmbeddingResult(body=body, cache=cache, n_floats=floats_in(vectors))


def _extensions(resolved: ResolvedItem, emb: Embedding) -> dict[str, Any]:
    ext: dict[str, Any] = {}
    if resolved.page is not None:
        ext["input_index"] = resolved.input_index
        ext["page"] = resolved.page
    for key, value in emb.extras.items():
        ext[key] = value.tolist() if isinstance(value, np.ndarray) else value
    return ext


def _tie_to(exc: ApiError, param: str) -> ApiError:
    """Point an item's error at its ``input[i]`` and say so at the start of the message."""
    if not exc.message.startswith(param):
        exc.message = f"{param}: {exc.message}"
        exc.args = (exc.message,)
    return exc.with_param(param)
