"""The embeddings use case, independent of HTTP: check the model, resolve inputs, and run the
embed pipeline (:mod:`app.pipeline`): cache read, then the misses computed inline or, when they
are many images, as a job that workers run through the same pipeline. Also the async jobs API:
submit (everything validated first), status, result, cancel."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from app.cache import CachePolicy
from app.encoding import (
    VECTOR_EXTRAS,
    apply_dimensions,
    check_dimensions,
    embedding_item,
    floats_in,
)
from app.engine.base import Embedding, ImageInput, ModelInfo
from app.engine.prompts import resolve_prompt_name, with_prompt
from app.errors import (
    InternalError,
    InvalidRequest,
    ModelNotFound,
    ModelNotReady,
    QueueUnavailable,
)
from app.jobs.items import JobItem
from app.pipeline import Pipeline, check_request_tokens, choose_lane, should_queue
from app.protocol import EmbeddingRequest
from app.settings import Settings

if TYPE_CHECKING:
    from app.backends import Backends
    from app.engine.runner import Engine
    from app.inputs import ResolvedItem
    from app.jobs.client import JobClient

log = logging.getLogger(__name__)

# X-Cache values besides hit / miss / partial
CACHE_OFF = "off"  # no cache configured (--no-cache, or no Redis), or Redis unreachable
CACHE_BYPASS = "bypass"  # the client asked not to read it (Cache-Control: no-cache/no-store)


class InputResolverLike(Protocol):
    max_image_pixels_for_model: int | None

    async def resolve(self, raw_input: object) -> list[ResolvedItem]: ...

    async def aclose(self) -> None: ...


@dataclass
class EmbeddingResult:
    """The response body (numpy arrays in it are serialised by ``app.encoding.dumps``) plus the
    X-Cache status."""

    body: dict[str, Any]
    cache: str = CACHE_OFF
    n_floats: int = 0
    job_id: str | None = None
    lane: str | None = None  # interactive | bulk | job; None when all came from the cache
    timings: dict[str, float] = field(default_factory=dict)
    # modality (text | image) -> [items, tokens] of the response (metrics, access log)
    usage: dict[str, list[int]] = field(default_factory=dict)

    @property
    def items(self) -> int:
        return sum(n for n, _ in self.usage.values())

    @property
    def tokens(self) -> int:
        return sum(t for _, t in self.usage.values())


def usage_by_modality(inputs: Sequence[object], embeddings: Sequence[Embedding]) -> dict:
    usage: dict[str, list[int]] = {}
    for x, emb in zip(inputs, embeddings, strict=True):
        counts = usage.setdefault("image" if isinstance(x, ImageInput) else "text", [0, 0])
        counts[0] += 1
        counts[1] += int(emb.n_tokens)
    return usage


@dataclass
class Embedded:
    """A request's embeddings, how many came from the cache, and where the rest ran."""

    embeddings: list[Embedding]
    cached: int
    job_id: str | None = None
    lane: str | None = None


# (input_index, page, [width, height] of an image) of each output item: what the response
# needs beyond the vectors.
Origin = tuple[int, int | None, list[int] | None]


def origin_of(item: ResolvedItem) -> Origin:
    meta = getattr(item.item, "meta", None) or {}
    size = [int(meta["width"]), int(meta["height"])] if "width" in meta else None
    return (item.input_index, item.page, size)


class EmbeddingService:
    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        resolver: InputResolverLike,
        backends: Backends | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.resolver = resolver
        self.backends = backends
        cache = backends.cache if backends is not None and settings.cache else None
        self.pipeline = Pipeline(engine, cache)
        self._queue_down_logged = False

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

    def cache_policy(self, cache_control: str | None) -> CachePolicy:
        enabled = self.settings.cache and self.backends is not None
        return CachePolicy.from_request(cache_control, enabled=enabled)

    async def _resolve(self, req: EmbeddingRequest) -> tuple[ModelInfo, list[ResolvedItem]]:
        self.check_model(req.model)
        info = self.model_info()
        check_dimensions(req.dimensions, info)
        prompt = resolve_prompt_name(info, req.input_type, req.prompt_name)
        items = await self.resolver.resolve(req.input)
        if not items:  # the resolver rejects empty input; keep the invariant here too
            raise InvalidRequest("input: must not be empty", param="input")
        return info, with_prompt(items, prompt)

    # ---- POST /v1/embeddings ----------------------------------------------------------------
    async def embed(
        self, req: EmbeddingRequest, *, cache_control: str | None = None
    ) -> EmbeddingResult:
        _, items = await self._resolve(req)
        policy = self.cache_policy(cache_control)
        if req.pooling is not None:
            from app.pooled_embed import embed_pooled

            done = await embed_pooled(self, items, policy, req.truncate, req.pooling)
        else:
            done = await self.embed_items(items, policy, req.truncate)
        embeddings = done.embeddings
        if len(embeddings) != len(items):
            raise InternalError(
                f"the model returned {len(embeddings)} embeddings for {len(items)} inputs"
            )
        origins = [origin_of(r) for r in items]
        result = self._result(
            req.encoding_format, req.dimensions, origins, embeddings, req.embedding_type
        )
        result.cache = self._cache_header(policy, len(items), done.cached)
        result.job_id = done.job_id
        result.lane = done.lane if done.job_id is None else "job"
        result.usage = usage_by_modality([r.item for r in items], embeddings)
        return result

    async def embed_items(
        self, items: Sequence[ResolvedItem], policy: CachePolicy, truncate: bool
    ) -> Embedded:
        """Resolved items through the pipeline: cache read, then the misses inline or as a job."""
        inputs, params = [r.item for r in items], [r.param for r in items]
        pipeline = self.pipeline
        keys = pipeline.keys(inputs, policy, truncate=truncate)
        looked = await pipeline.lookup(keys, policy)
        cached, miss = looked.hits, looked.misses
        job_id, lane = None, None
        if miss:
            m_inputs, m_params = [inputs[i] for i in miss], [params[i] for i in miss]
            m_keys = [keys[i] for i in miss]
            measured = await pipeline.measure(m_inputs, m_params, truncate)
            cached_tokens = sum(e.n_tokens for e in looked.found if e is not None)
            check_request_tokens(sum(p.n_tokens for p in measured) + cached_tokens, self.settings)
            computed = None
            if should_queue(measured, self.settings):
                jobs_items = [
                    JobItem.of(x, k if policy.write else None, p)
                    for x, k, p in zip(m_inputs, m_keys, m_params, strict=True)
                ]
                computed, job_id = await self._via_job(jobs_items, truncate)
            if computed is None:
                lane = choose_lane(measured, self.settings)
                computed = await pipeline.compute(m_inputs, m_params, m_keys, policy,
                                                  truncate=truncate, measured=measured,
                                                  lane=lane)  # fmt: skip
        else:
            computed = []
        return Embedded(looked.fill(miss, computed), cached, job_id, lane)

    def _cache_header(self, policy: CachePolicy, n: int, cached: int) -> str:
        cache = self.pipeline.cache
        if cache is None or not cache.available:
            return CACHE_OFF
        if not policy.read:
            return CACHE_BYPASS
        if cached == n:
            return "hit"
        return "miss" if cached == 0 else "partial"

    async def _via_job(
        self, items: list[JobItem], truncate: bool
    ) -> tuple[list[Embedding] | None, str | None]:
        """Run the misses as a job and wait; ``(None, None)`` when no job can run (the queue
        is down or no worker serves this model): then they are computed inline."""
        jobs = self.backends.jobs_for(self.model_name) if self.backends is not None else None
        if jobs is None:
            return None, None
        try:
            if not await jobs.has_workers():
                raise QueueUnavailable(f"no live worker serves queue {jobs.queue!r}")
            st = await jobs.submit(items, {"sync": True, "truncate": truncate,
                                           "cache_read": False})  # fmt: skip
        except QueueUnavailable as exc:
            if not self._queue_down_logged:
                log.warning("jobs unavailable (%s); computing large requests inline", exc.message)
                self._queue_down_logged = True
            return None, None
        self._queue_down_logged = False
        try:
            return await jobs.wait(st.id), st.id
        except asyncio.CancelledError:
            # The client went away: stop the job's remaining chunks.
            with contextlib.suppress(Exception):
                await asyncio.shield(jobs.cancel(st.id))
            raise

    # ---- the async jobs API -----------------------------------------------------------------
    async def submit_job(
        self, req: EmbeddingRequest, *, cache_control: str | None = None, owner: str = ""
    ) -> dict[str, Any]:
        """Validate every item (resolve, fetch, decode, tokenise, limits) before anything is
        queued, then queue the whole request as one job, belonging to ``owner`` (the key's
        :attr:`app.auth.Principal.owner`): other owners get 404 for it."""
        info, items = await self._resolve(req)
        if req.pooling is not None:
            from app.pooled_embed import check_pooling

            check_pooling(req.pooling, info.kind)
        jobs = self._jobs()
        inputs, params = [r.item for r in items], [r.param for r in items]
        measured = await self.pipeline.measure(inputs, params, req.truncate)
        check_request_tokens(sum(p.n_tokens for p in measured), self.settings)
        policy = self.cache_policy(cache_control)
        keys = self.pipeline.keys(inputs, policy, truncate=req.truncate)
        meta = {
            "encoding_format": req.encoding_format,
            "embedding_type": req.embedding_type,
            "pooling": req.pooling.model_dump() if req.pooling is not None else None,
            "dimensions": req.dimensions,
            "origins": [list(origin_of(r)) for r in items],
            "cache_read": policy.read,
            "truncate": req.truncate,
        }
        job_items = [
            JobItem.of(x, k if policy.write else None, p)
            for x, k, p in zip(inputs, keys, params, strict=True)
        ]
        status = await jobs.submit(job_items, meta, owner=owner)
        return status.to_dict()

    async def job_status(self, job_id: str, owner: str = "") -> dict[str, Any]:
        return (await self._jobs().status(job_id, owner)).to_dict()

    async def cancel_job(self, job_id: str, owner: str = "") -> dict[str, Any]:
        return (await self._jobs().cancel(job_id, owner)).to_dict()

    async def job_result(
        self, job_id: str, encoding_format: str | None, owner: str = ""
    ) -> EmbeddingResult:
        jobs = self._jobs()
        status = await jobs.status(job_id, owner)
        embeddings = await jobs.result(job_id, status)
        meta = status.meta
        fmt = encoding_format or meta.get("encoding_format", "float")
        if fmt not in ("float", "base64"):
            raise InvalidRequest(
                f"encoding_format must be 'float' or 'base64', not {fmt!r}", "encoding_format"
            )
        if meta.get("pooling"):  # pooled when read (cheap next to the forward)
            from app.pooled_embed import pool_result

            embeddings = await pool_result(embeddings, meta["pooling"])
        origins = [(int(i), p, size) for i, p, size in meta.get("origins", [])] or [
            (i, None, None) for i in range(len(embeddings))
        ]
        result = self._result(
            fmt, meta.get("dimensions"), origins, embeddings, meta.get("embedding_type", "float")
        )
        result.job_id = job_id
        return result

    def _jobs(self) -> JobClient:
        if self.backends is None:
            raise QueueUnavailable(
                "this server runs without Redis, so it has no jobs API",
                headers={"Retry-After": "60"},
            )
        return self.backends.job_client(self.model_name)

    # ---- for the Batch API (app.batch_runner): a line checked as embed checks it --------------
    async def resolve_request(self, req: EmbeddingRequest) -> list[ResolvedItem]:
        """The model, dimensions and prompt checked and the inputs resolved, as :meth:`embed`."""
        return (await self._resolve(req))[1]

    def response_body(
        self, req: EmbeddingRequest, items: Sequence[ResolvedItem], embeddings: Sequence[Embedding]
    ) -> dict[str, Any]:
        """The body :meth:`embed` answers ``req`` with, for these (pooled) embeddings."""
        if len(embeddings) != len(items):
            raise InternalError(
                f"the model returned {len(embeddings)} embeddings for {len(items)} inputs"
            )
        origins = [origin_of(r) for r in items]
        return self._result(
            req.encoding_format, req.dimensions, origins, embeddings, req.embedding_type
        ).body

    # ---- the response ------------------------------------------------------------------------
    def _result(
        self,
        encoding_format: str,
        dimensions: int | None,
        origins: Sequence[Origin],
        embeddings: Sequence[Embedding],
        embedding_type: str = "float",
    ) -> EmbeddingResult:
        vectors = [apply_dimensions(e.vectors, dimensions) for e in embeddings]
        data = []
        for index, (origin, emb, vec) in enumerate(zip(origins, embeddings, vectors, strict=True)):
            ext = _extensions(origin, emb)
            data.append(embedding_item(vec, index, encoding_format, ext, embedding_type))
        tokens = sum(int(e.n_tokens) for e in embeddings)
        body = {
            "object": "list",
            "data": data,
            "model": self.model_name,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return EmbeddingResult(body=body, n_floats=floats_in(vectors))


def _extensions(origin: Origin, emb: Embedding) -> dict[str, Any]:
    ext: dict[str, Any] = {}
    input_index, page, size = origin
    if page is not None:
        ext["input_index"] = input_index
        ext["page"] = page
    if size is not None:
        ext["source_size"] = size  # decoded; image_size (as embedded) comes from the engine
    for key, value in emb.extras.items():
        keep = key in VECTOR_EXTRAS or not isinstance(value, np.ndarray)
        ext[key] = value if keep else value.tolist()
    return ext
