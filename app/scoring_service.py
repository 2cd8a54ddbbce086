"""POST /v1/rerank and /v1/score: embed the query and the documents through the embeddings
service (so the cache, the lanes and the jobs apply: a repeat rerank of the same pages costs no
forward), then score them with :mod:`app.scoring` (MaxSim for multi-vector models, cosine for
pooled ones).

A repeat rerank should not even decode its pages again (PNG decoding is ~3 ms a page, the whole
budget of 100 cached pages): multi-vector results of inputs whose request bytes fix their
content (texts, ``data:`` images) are also cached under a key of those bytes (``source_key``),
and a request whose every input hits it skips input resolution. URLs are always fetched.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from app.cache import CACHE_PREFIX
from app.engine.base import Embedding
from app.engine.prompts import resolve_prompt_name
from app.errors import ApiError, InvalidRequest
from app.protocol import EmbeddingRequest, RerankRequest, ScoreRequest
from app.scoring import rank, score_many
from app.service import EmbeddingService


@dataclass
class Embedded:
    """Embedded items of one request field: each item's (input index, PDF page, vectors)."""

    items: list[tuple[int, int | None, np.ndarray]]
    tokens: int
    cache: str
    lane: str | None
    usage: dict[str, list[int]] = field(default_factory=dict)  # modality -> [items, tokens]


@dataclass
class ScoringResult:
    body: dict[str, Any]
    cache: str
    lane: str | None
    # seconds: "embed" (inputs resolved, cache read, any forward) and "score" (the math)
    timings: dict[str, float] = field(default_factory=dict)
    usage: dict[str, list[int]] = field(default_factory=dict)  # for the metrics / access log

    @property
    def items(self) -> int:
        return sum(n for n, _ in self.usage.values())

    @property
    def tokens(self) -> int:
        return sum(t for _, t in self.usage.values())


def _merged_usage(*parts: Embedded) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for part in parts:
        for modality, (n, tokens) in part.usage.items():
            counts = out.setdefault(modality, [0, 0])
            counts[0] += n
            counts[1] += tokens
    return out


def _renamed(exc: ApiError, param: str, single: bool) -> ApiError:
    """Point an embeddings error (``input``, ``input[3].file``) at this endpoint's field."""
    old = exc.param or ""
    if old.startswith("input"):
        rest = old[len("input") :]
        if single and rest.startswith("[0]"):
            rest = rest[3:]
        new = param + rest
        if exc.message.startswith(old):
            exc.message = new + exc.message[len(old) :]
            exc.args = (exc.message,)
        exc.param = new
    return exc


def _combined_cache(*states: str) -> str:
    if len(set(states)) == 1:
        return states[0]
    if "off" in states or "bypass" in states:
        return next(s for s in states if s in ("off", "bypass"))
    return "partial"


def source_key(fingerprint: str, raw: Any, role: str, truncate: bool) -> str | None:
    """The cache key of a request input by its bytes, or None when they do not fix it."""
    if isinstance(raw, dict):
        url = raw.get("image_url")
        url = url.get("url") if isinstance(url, dict) and len(url) == 1 else url
        if set(raw) != {"type", "image_url"} or raw.get("type") != "image_url":
            return None
        if not isinstance(url, str) or not url.startswith("data:"):
            return None
    elif not isinstance(raw, str) or raw.startswith(("http://", "https://", "file:")):
        return None
    h = hashlib.sha256()
    for part in (fingerprint, role, str(truncate)):
        h.update(part.encode() + b"\0")
    h.update(orjson.dumps(raw, option=orjson.OPT_SORT_KEYS))
    return f"{CACHE_PREFIX}src:{h.hexdigest()}"


# Scoring more document floats than this runs on a thread, off the event loop.
INLINE_SCORE_FLOATS = 1 << 20


async def _off_loop(fn: Any, *args: Any, n_floats: int | None = None) -> Any:
    if n_floats is None:
        n_floats = sum(getattr(a, "size", 0) for a in args[-1]) if args else 0
    if n_floats <= INLINE_SCORE_FLOATS:
        return fn(*args)
    return await asyncio.to_thread(fn, *args)


class ScoringService:
    def __init__(self, service: EmbeddingService) -> None:
        self.service = service

    async def _embed(
        self,
        raw: list[Any],
        *,
        param: str,
        input_type: str,
        model: str,
        truncate: bool,
        cache_control: str | None,
        single: bool = False,
    ) -> Embedded:
        service = self.service
        keys, cache = self._source_keys(raw, input_type, truncate)
        policy = service.cache_policy(cache_control)
        limits = service.settings
        if keys is not None and cache is not None and policy.read and all(keys):
            found = await cache.get_many(keys) if len(raw) <= limits.max_inputs else [None]
            hits = [e for e in found if e is not None]
            n_tokens = sum(e.n_tokens for e in hits)
            if len(hits) == len(raw) and n_tokens <= limits.max_tokens_per_request:
                items = [(i, None, e.vectors) for i, e in enumerate(hits)]
                usage: dict[str, list[int]] = {}
                for x, e in zip(raw, hits, strict=True):
                    image = isinstance(x, dict) or x.startswith("data:")
                    counts = usage.setdefault("image" if image else "text", [0, 0])
                    counts[0] += 1
                    counts[1] += e.n_tokens
                return Embedded(items, n_tokens, "hit", None, usage)
        req = EmbeddingRequest(input=raw, model=model, input_type=input_type, truncate=truncate)
        try:
            result = await service.embed(req, cache_control=cache_control)
        except ApiError as exc:
            raise _renamed(exc, param, single) from None
        items, next_index = [], 0
        for d in result.body["data"]:
            index = int(d.get("input_index", next_index))
            next_index = index + 1
            items.append((index, d.get("page"), np.asarray(d["embedding"], dtype=np.float32)))
        tokens = int(result.body["usage"]["total_tokens"])
        if keys is not None and cache is not None and policy.write and len(items) == len(raw):
            multi = [(k, v) for k, (_, _, v) in zip(keys, items, strict=True) if k and v.ndim == 2]
            await cache.set_many({k: Embedding(v, len(v)) for k, v in multi})
        return Embedded(items, tokens, result.cache, result.lane, result.usage)

    def _source_keys(
        self, raw: list[Any], input_type: str, truncate: bool
    ) -> tuple[list[str | None] | None, Any]:
        service = self.service
        cache = service.pipeline.cache
        if cache is None or not cache.enabled or service.model_info().kind != "multi_vector":
            return None, None
        info = service.model_info()
        role = resolve_prompt_name(info, input_type, None) or "-"
        return [source_key(info.fingerprint, x, role, truncate) for x in raw], cache

    async def _query_and_documents(
        self,
        model: str,
        queries: list[Any],
        documents: list[Any],
        *,
        query_param: str,
        documents_param: str,
        truncate: bool,
        cache_control: str | None,
        single_query: bool,
    ) -> tuple[Embedded, Embedded]:
        self.service.check_model(model)
        common = {"model": model, "truncate": truncate, "cache_control": cache_control}
        q, d = await asyncio.gather(
            self._embed(queries, param=query_param, input_type="query", single=single_query,
                        **common),
            self._embed(documents, param=documents_param, input_type="document", **common),
        )  # fmt: skip
        if len(q.items) != len(queries):
            raise InvalidRequest(
                f"{query_param}: must be one text or image per query (a PDF has several pages)",
                param=query_param,
            )
        return q, d

    # ---- POST /v1/rerank ---------------------------------------------------------------------
    async def rerank(
        self, req: RerankRequest, *, cache_control: str | None = None
    ) -> ScoringResult:
        if req.top_n is not None and req.top_n < 1:
            raise InvalidRequest("top_n must be at least 1", param="top_n")
        started = time.perf_counter()
        q, d = await self._query_and_documents(
            req.model, [req.query], req.documents, query_param="query",
            documents_param="documents", truncate=req.truncate, cache_control=cache_control,
            single_query=True,
        )  # fmt: skip
        query = q.items[0][2]
        embedded = time.perf_counter()
        scores = await _off_loop(score_many, query, [v for _, _, v in d.items])
        scored = time.perf_counter()
        results = []
        for i in rank(scores, req.top_n):
            index, page, _ = d.items[i]
            entry: dict[str, Any] = {"index": index, "relevance_score": float(scores[i])}
            if page is not None:
                entry["page"] = page
            if req.return_documents:
                doc = req.documents[index]
                entry["document"] = {"text": doc} if isinstance(doc, str) else doc
            results.append(entry)
        tokens = q.tokens + d.tokens
        body = {
            "id": f"rerank-{uuid.uuid4().hex}",
            "object": "rerank",
            "model": self.service.model_name,
            "results": results,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        timings = {"embed": embedded - started, "score": scored - embedded}
        cache = _combined_cache(q.cache, d.cache)
        return ScoringResult(body, cache, d.lane or q.lane, timings, _merged_usage(q, d))

    # ---- POST /v1/score ----------------------------------------------------------------------
    async def score(self, req: ScoreRequest, *, cache_control: str | None = None) -> ScoringResult:
        left = req.text_1 if isinstance(req.text_1, list) else [req.text_1]
        right = req.text_2 if isinstance(req.text_2, list) else [req.text_2]
        for name, value in (("text_1", left), ("text_2", right)):
            if not value or any(v is None for v in value):
                raise InvalidRequest(f"'{name}' must be an input or a non-empty list", name)
        if len(left) != 1 and len(left) != len(right):
            raise InvalidRequest(
                f"text_1 holds {len(left)} inputs and text_2 {len(right)}: send one text_1 "
                "(scored against every text_2) or two lists of the same length (pairwise)",
                param="text_2",
            )
        started = time.perf_counter()
        q, d = await self._query_and_documents(
            req.model, left, right, query_param="text_1", documents_param="text_2",
            truncate=req.truncate, cache_control=cache_control,
            single_query=not isinstance(req.text_1, list),
        )  # fmt: skip
        if len(d.items) != len(right):
            raise InvalidRequest("text_2: a PDF has several pages; send images", param="text_2")
        queries = [v for _, _, v in q.items]
        docs = [v for _, _, v in d.items]

        def compute() -> list[float]:
            if len(queries) == 1:
                return [float(s) for s in score_many(queries[0], docs)]
            return [float(score_many(a, [b])[0]) for a, b in zip(queries, docs, strict=True)]

        embedded = time.perf_counter()
        scores = await _off_loop(compute, n_floats=sum(v.size for v in docs))
        scored = time.perf_counter()
        tokens = q.tokens + d.tokens
        body = {
            "id": f"score-{uuid.uuid4().hex}",
            "object": "list",
            "created": int(time.time()),
            "model": self.service.model_name,
            "data": [{"index": i, "object": "score", "score": s} for i, s in enumerate(scores)],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        timings = {"embed": embedded - started, "score": scored - embedded}
        cache = _combined_cache(q.cache, d.cache)
        return ScoringResult(body, cache, d.lane or q.lane, timings, _merged_usage(q, d))
