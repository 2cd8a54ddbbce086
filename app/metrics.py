"""Prometheus metrics (``GET /metrics``), one registry per app (tests run several in one process).

Counters and histograms move in one place, :meth:`Metrics.request_done` (the end of every
request) and :meth:`Metrics.batch_done` (the engine's ``on_batch``). Everything else is read at
scrape time by :class:`StateCollector`: the engine's own counters and queues, the cache stats,
Redis, jobs and workers, memory.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from app.jobs.store import EXPIRY_KEY, STATS_KEY, job_key

if TYPE_CHECKING:
    from app.backends import Backends
    from app.engine.runner import Engine
    from app.service import EmbeddingResult

log = logging.getLogger(__name__)

NS = "mlxemb"
LANES = ("interactive", "bulk")
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_PADDING_BUCKETS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
JOBS_SCANNED = 10_000  # most job records read per scrape for mlxemb_jobs


class Metrics:
    def __init__(
        self, engine: Engine, backends: Backends | None = None, models: Sequence[str] = ()
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            f"{NS}_requests", "HTTP requests by route template, method and status.",
            ["route", "method", "status"], registry=r,
        )  # fmt: skip
        self.latency = Histogram(
            f"{NS}_request_duration_seconds",
            "Request latency by route and lane (interactive, bulk, job, cache: all hits, "
            "none: not an embedding request).",
            ["route", "lane"], buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.items = Counter(
            f"{NS}_embedded_items", "Items answered by /v1/embeddings, by model and modality.",
            ["model", "modality"], registry=r,
        )  # fmt: skip
        self.tokens = Counter(
            f"{NS}_embedded_tokens", "Tokens of the items answered by /v1/embeddings.",
            ["model", "modality"], registry=r,
        )  # fmt: skip
        self.batch_size = Histogram(
            f"{NS}_batch_size", "Items per forward pass, by lane.",
            ["lane"], buckets=_BATCH_BUCKETS, registry=r,
        )  # fmt: skip
        self.batch_padding = Histogram(
            f"{NS}_batch_padding_ratio",
            "Fraction of a forward pass's tokens that are padding, by lane.",
            ["lane"], buckets=_PADDING_BUCKETS, registry=r,
        )  # fmt: skip
        r.register(StateCollector(engine, backends, models))

    def request_done(
        self, route: str, method: str, status: int, seconds: float, result: EmbeddingResult | None
    ) -> None:
        self.requests.labels(route, method, str(status)).inc()
        lane = "none"
        if result is not None:
            lane = result.lane or "cache"
            model = str(result.body.get("model", ""))
            for modality, (n, tokens) in result.usage.items():
                self.items.labels(model, modality).inc(n)
                self.tokens.labels(model, modality).inc(tokens)
        self.latency.labels(route, lane).observe(seconds)

    def batch_done(self, lane: str, n_items: int, real_tokens: int, padded_tokens: int) -> None:
        """Called on the MLX thread after each forward pass: keep it cheap."""
        self.batch_size.labels(lane).observe(n_items)
        if padded_tokens > 0:
            self.batch_padding.labels(lane).observe(1.0 - real_tokens / padded_tokens)

    def exposition(self) -> bytes:
        """The text format (reads Redis: call it off the event loop)."""
        return generate_latest(self.registry)


def resident_memory_bytes() -> int | None:
    """Current RSS: /proc on Linux, psutil where installed, else None."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil  # type: ignore[import-untyped]
    except ImportError:
        return None
    return int(psutil.Process().memory_info().rss)


def _gauge(name: str, doc: str, value: float | None) -> Metric | None:
    if value is None:
        return None
    g = GaugeMetricFamily(f"{NS}_{name}", doc)
    g.add_metric([], float(value))
    return g


class StateCollector(Collector):
    """Values read when Prometheus scrapes."""

    def __init__(self, engine: Engine, backends: Backends | None, models: Sequence[str]) -> None:
        self.engine = engine
        self.backends = backends
        self.models = list(models)
        self._redis: Any = None

    def collect(self) -> Iterator[Metric]:
        yield from self._engine()
        yield from self._memory()
        if self.backends is not None:
            yield from self._backends(self.backends)

    def describe(self) -> Iterator[Metric]:
        return iter(())  # dynamic: nothing to check at registration

    def _engine(self) -> Iterator[Metric]:
        e = self.engine
        ready = GaugeMetricFamily(f"{NS}_model_ready", "1 once the model is loaded.")
        ready.add_metric([], 1.0 if e.ready else 0.0)
        yield ready
        load = getattr(e, "load_seconds", None)
        if load is not None:
            yield _gauge("model_load_seconds", "Seconds the model took to load.", load)
        depth = GaugeMetricFamily(
            f"{NS}_queue_depth", "Items waiting in each engine lane.", labels=["lane"]
        )
        batches = CounterMetricFamily(
            f"{NS}_engine_batches", "Forward passes run, by lane.", labels=["lane"]
        )
        for lane in LANES:
            depth.add_metric([lane], float(e.queued(lane)))
            batches.add_metric([lane], float(e.batches.get(lane, 0)))
        yield depth
        yield batches
        if len(self.models) > 1:
            per_model = GaugeMetricFamily(
                f"{NS}_model_queue_depth", "Items waiting in each engine lane, by model.",
                labels=["model", "lane"],
            )  # fmt: skip
            for model in self.models:
                for lane in LANES:
                    per_model.add_metric([model, lane], float(e.queued(lane, model)))
            yield per_model
        for name, value, doc in (
            ("engine_forward_calls", e.forward_calls, "Forward passes run (all lanes)."),
            ("engine_items", e.items_computed, "Items computed by the model (cache misses)."),
            ("engine_real_tokens", e.real_tokens, "Tokens of the items computed."),
            ("engine_padded_tokens", e.padded_tokens, "Tokens the batches held, padding included."),
        ):
            c = CounterMetricFamily(f"{NS}_{name}", doc)
            c.add_metric([], float(value))
            yield c

    def _memory(self) -> Iterator[Metric]:
        rss = _gauge(
            "process_resident_memory_bytes", "Resident memory of the server process.",
            resident_memory_bytes(),
        )  # fmt: skip
        if rss is not None:
            yield rss
        mem = _mlx_memory()
        if mem:
            g = GaugeMetricFamily(
                f"{NS}_mlx_memory_bytes",
                "MLX allocator memory: active (in arrays), cache (held for reuse), peak.",
                labels=["kind"],
            )
            for kind, value in mem.items():
                g.add_metric([kind], float(value))
            yield g

    def _backends(self, b: Backends) -> Iterator[Metric]:
        stats = b.cache.stats
        for name, value, doc in (
            ("cache_hits", stats.hits, "Embedding cache lookups that found the item."),
            ("cache_misses", stats.misses, "Embedding cache lookups that did not."),
            ("cache_writes", stats.writes, "Embeddings written to the cache."),
            ("cache_errors", stats.errors + stats.skipped, "Cache calls lost to Redis errors."),
        ):
            c = CounterMetricFamily(f"{NS}_{name}", doc)
            c.add_metric([], float(value))
            yield c
        if self._redis is None:  # one client for all scrapes (jobs may not be open yet)
            self._redis = b.handle.sync_client(socket_timeout=2.0)
        r = self._redis
        up, cache_bytes, jobs_by_state, retries = 0.0, None, None, None
        try:
            r.ping()
            up = 1.0
            cache_bytes = _used_memory(r)
            jobs_by_state = _jobs_by_state(r)
            retries = int(r.hget(STATS_KEY, "chunk_retries") or 0)  # written by the workers
        except Exception as exc:  # Redis down: say so, keep the rest of the scrape
            log.debug("metrics: redis unreachable: %s", exc)
        yield _gauge("redis_up", "1 when Redis answers.", up)
        if cache_bytes is not None:
            yield _gauge(
                "redis_used_memory_bytes",
                "Memory Redis uses (the cache, jobs and results).", cache_bytes,
            )  # fmt: skip
        if jobs_by_state is not None:
            g = GaugeMetricFamily(f"{NS}_jobs", "Jobs kept in Redis, by state.", labels=["state"])
            for state in ("queued", "running", "succeeded", "failed", "cancelled"):
                g.add_metric([state], float(jobs_by_state.get(state, 0)))
            yield g
        if retries is not None:
            c = CounterMetricFamily(
                f"{NS}_chunk_retries", "Job chunk attempts that failed and were retried."
            )
            c.add_metric([], float(retries))
            yield c
        if b.jobs is not None and up:
            try:
                workers = b.jobs.workers()
            except Exception:
                workers = None
            if workers is not None:
                yield _gauge("workers_live", "Live workers serving this model's queue.", workers)


def _used_memory(r: Any) -> int | None:
    try:
        return int(r.info("memory").get("used_memory"))
    except Exception:  # fakeredis without INFO memory
        return None


def _jobs_by_state(r: Any) -> dict[str, int]:
    ids = r.zrange(EXPIRY_KEY, 0, JOBS_SCANNED - 1)
    pipe = r.pipeline(transaction=False)
    for job_id in ids:
        pipe.hget(job_key(job_id.decode() if isinstance(job_id, bytes) else job_id), "status")
    counts: dict[str, int] = {}
    for status in pipe.execute() if ids else []:
        if status:
            s = status.decode() if isinstance(status, bytes) else status
            counts[s] = counts.get(s, 0) + 1
    return counts


def _mlx_memory() -> dict[str, int] | None:
    """MLX's allocator counters, only where mlx is already loaded (never imported here)."""
    if "mlx.core" not in sys.modules:
        return None
    from app.engine.memory import mlx_memory

    return mlx_memory()
