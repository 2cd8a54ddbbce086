"""The one MLX thread and the submission API in front of it.

Requests hand in lists of prepared items, each in a lane (:mod:`app.engine.scheduler` decides
what runs next). The thread waits up to ``max_wait_ms`` for a batch to fill only while more
interactive items are known to be on their way (announced with ``incoming``): a lone request
never waits. Requests whose caller went away are dropped before compute. If a batch fails, each
request in it is retried alone, so only the offending request fails. Each lane has its own
bound (``max_queue``, ``max_bulk_queue``): a full bulk lane never refuses a query. When the
queues run dry, ``release_memory`` gives the framework's cached buffers back.

Several models may share the one thread (``Engine({name: loader, ...})``): they load one after
the other, every batch holds one model's items, each model has its own queue bounds, and
:meth:`Engine.view` gives each model's users the single-model API (``info``, ``submit``, ...).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future
from dataclasses import dataclass

from app.engine.base import Adapter, Embedding, EngineInput, ModelInfo, Prepared
from app.engine.loaded_models import LoadedModels, Loader
from app.engine.model_view import ModelView
from app.engine.scheduler import (
    BULK,
    INTERACTIVE,
    LANES,
    Batch,
    Request,
    Scheduler,
    padded_tokens,
)
from app.errors import ApiError, InternalError, ModelNotReady, Overloaded

log = logging.getLogger(__name__)


@dataclass
class Announcement:
    n: int


class Engine:
    def __init__(
        self,
        load_adapter: Loader | Mapping[str, Loader],
        *,
        max_batch_size: int = 32,
        max_wait_ms: float = 5.0,
        max_queue: int = 4096,
        max_bulk_queue: int = 65536,
        max_batch_tokens: int = 16384,
        interactive_burst: int = 4,
        busy_bulk_batch_size: int | None = None,
        release_memory: Callable[[], None] | None = None,
    ) -> None:
        self.models = LoadedModels(load_adapter)
        self.max_wait = max(0.0, max_wait_ms) / 1000.0
        self.max_queue = {INTERACTIVE: max_queue, BULK: max_bulk_queue}
        self._sched = Scheduler(
            max_batch_size=max_batch_size,
            max_batch_tokens=max_batch_tokens,
            interactive_burst=interactive_burst,
            busy_bulk_batch_size=busy_bulk_batch_size,
        )
        self._release_memory = release_memory
        self.forward_calls = 0
        self.items_computed = 0
        self.real_tokens = 0  # tokens of the items computed
        self.padded_tokens = 0  # tokens the batches held, padding included
        self.batches = {INTERACTIVE: 0, BULK: 0}
        # (lane, items, real tokens, padded tokens) after each forward pass, on the MLX thread
        self.on_batch: Callable[[str, int, int, int], None] | None = None
        self._calls: collections.deque[tuple[Callable, Future]] = collections.deque()
        self._incoming = 0
        self._dirty = False  # computed since the memory was last released
        self._cv = threading.Condition()
        self._ready = threading.Event()
        self._stopped = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="mlx-engine", daemon=True)

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self) -> Engine:
        self._thread.start()
        return self

    def wait_ready(self, timeout: float | None = None) -> ModelInfo:
        if not self._ready.wait(timeout):
            raise TimeoutError("model did not load in time")
        if self.load_error is not None:
            raise RuntimeError(f"model failed to load: {self.load_error}") from self.load_error
        return self.info

    @property
    def ready(self) -> bool:
        return self._ready.is_set() and self.load_error is None

    @property
    def load_error(self) -> BaseException | None:
        return self.models.error

    @property
    def load_seconds(self) -> float | None:
        return self.models.seconds

    @property
    def adapter(self) -> Adapter | None:
        """The first model's adapter (None until every model has loaded)."""
        return self.models.adapters[self.models.names[0]] if self.ready else None

    def _adapter(self, model: str | None) -> Adapter:
        if not self.ready:
            raise ModelNotReady("the model is still loading; retry shortly")
        return self.models.adapters[self.models.key(model)]

    @property
    def info(self) -> ModelInfo:
        return self._adapter(None).info

    def info_of(self, model: str) -> ModelInfo:
        return self._adapter(model).info

    def view(self, model: str) -> ModelView:
        """The single-model API of ``model``."""
        return ModelView(self, self.models.key(model))

    def queued(self, lane: str, model: str | None = None) -> int:
        """Items waiting in ``lane`` (of ``model``, or of all models)."""
        if model is None:
            return self._sched.queued[lane]
        return self._sched.queued_for(self.models.key(model), lane)

    def close(self, timeout: float = 10.0) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        # A model still loading cannot be interrupted: do not wait for it (the thread is a
        # daemon), so Ctrl-C during start-up stops at once.
        loading = not self._ready.is_set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            if not loading:
                self._stopped.wait(timeout)

    # ---- submission ------------------------------------------------------------------------
    def prepare(
        self, item: EngineInput, *, truncate: bool = False, model: str | None = None
    ) -> Prepared:
        """Validate + preprocess one item (any thread; CPU only)."""
        return self._adapter(model).prepare(item, truncate=truncate)

    def measure(
        self, item: EngineInput, *, truncate: bool = False, model: str | None = None
    ) -> Prepared:
        """Validate one item and count its tokens. An adapter with a ``measure`` may skip the
        costly preprocessing (then ``payload`` is None and ``prepare`` completes it)."""
        adapter = self._adapter(model)
        fn = getattr(adapter, "measure", None) or adapter.prepare
        return fn(item, truncate=truncate)

    @contextlib.contextmanager
    def incoming(self, n: int, lane: str = INTERACTIVE) -> Iterator[Announcement]:
        """Announce ``n`` interactive items being prepared, so a batch being filled may wait
        for them. Hand the announcement to ``submit`` to withdraw it as the items are queued."""
        announcement = Announcement(n if lane == INTERACTIVE else 0)
        with self._cv:
            self._incoming += announcement.n
        try:
            yield announcement
        finally:
            with self._cv:
                self._incoming -= announcement.n
                announcement.n = 0
                self._cv.notify_all()

    def submit(
        self,
        items: list[Prepared],
        announced: Announcement | None = None,
        *,
        lane: str = INTERACTIVE,
        owner: object = None,
        model: str | None = None,
    ) -> Future:
        """Queue a request's items (of ``model``, default the first) in ``lane``; ``owner``
        groups bulk requests for the round-robin (default: the request itself)."""
        fut: Future = Future()
        if not items:
            fut.set_result([])
            return fut
        model = self.models.key(model)
        self._adapter(model)  # ModelNotReady while loading
        if lane not in LANES:
            raise ValueError(f"unknown lane {lane!r}")
        n = len(items)
        req = Request.make(items, lane, owner, model)
        with self._cv:
            if self._stop:
                raise Overloaded("the server is shutting down")
            queued = self._sched.queued_for(model, lane)
            if queued + n > self.max_queue[lane]:
                raise Overloaded(
                    f"too many items waiting for the model in the {lane} lane "
                    f"({queued} queued, limit {self.max_queue[lane]}); retry later",
                    headers={"Retry-After": "1"},
                )
            self._sched.add(req)
            if announced is not None:
                self._incoming -= announced.n
                announced.n = 0
            self._cv.notify_all()
        return req.future

    async def embed(
        self, items: list[Prepared], *, lane: str = INTERACTIVE, model: str | None = None
    ) -> list[Embedding]:
        return await self.wait(self.submit(items, lane=lane, model=model))

    async def wait(self, fut: Future) -> list[Embedding]:
        """Await a submitted request; if the caller goes away, its items are dropped."""
        try:
            return await asyncio.wrap_future(fut)
        except asyncio.CancelledError:
            self._abandon(fut)
            raise

    def embed_blocking(
        self,
        items: list[Prepared],
        timeout: float | None = None,
        *,
        lane: str = INTERACTIVE,
        model: str | None = None,
    ) -> list[Embedding]:
        if threading.current_thread() is self._thread:
            raise RuntimeError("embed_blocking called on the MLX thread")
        fut = self.submit(items, lane=lane, model=model)
        try:
            return fut.result(timeout)
        except BaseException:
            self._abandon(fut)
            raise

    def call(
        self,
        fn: Callable[[Adapter], object],
        timeout: float | None = None,
        *,
        model: str | None = None,
    ) -> object:
        """Run ``fn(adapter)`` on the MLX thread and return its result (benchmarks, probes)."""
        fut: Future = Future()
        with self._cv:
            self._calls.append((lambda: fn(self._adapter(model)), fut))
            self._cv.notify_all()
        return fut.result(timeout)

    def _abandon(self, fut: Future) -> None:
        with self._cv:
            for req in self._sched.requests():
                if req.future is fut:
                    req.abandoned = True
        fut.cancel()

    # ---- the MLX thread --------------------------------------------------------------------
    def _run(self) -> None:
        loaded = self.models.load()
        self._ready.set()
        if loaded:
            self._serve()
        self._stopped.set()
        # Park instead of returning: a thread that used MLX and then exits before the
        # interpreter does makes MLX abort at process exit ("terminate called without an
        # active exception", measured 4-6 of 6 runs). A parked daemon thread exits cleanly.
        threading.Event().wait()

    def _serve(self) -> None:
        while True:
            self._run_calls()
            self._release_when_idle()
            batch = self._take_batch()
            if batch is None:
                return
            if batch:
                self._run_batch(batch)

    def _release_when_idle(self) -> None:
        """Give the framework's cached buffers back once the queue has run dry."""
        with self._cv:
            idle = self._dirty and not self._sched.has_work() and not self._calls
            if idle:
                self._dirty = False
        if idle and self._release_memory is not None:
            try:
                self._release_memory()
            except Exception:
                log.exception("releasing memory failed")

    def _take_batch(self) -> Batch | None:
        with self._cv:
            while not self._sched.has_work() and not self._calls and not self._stop:
                self._cv.wait()
            if self._stop:
                self._fail_all(Overloaded("the server is shutting down"))
                return None
            lane, batch = self._sched.next_batch()
            if lane == INTERACTIVE:
                deadline = time.monotonic() + self.max_wait
                while self._sched.room(batch) and self._incoming > 0 and not self._stop:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cv.wait(left)
                    batch = self._sched.fill(batch)
            if batch:
                self.batches[lane] += 1
            return batch

    def _run_calls(self) -> None:
        while True:
            with self._cv:
                if not self._calls:
                    return
                fn, fut = self._calls.popleft()
            try:
                fut.set_result(fn())
            except BaseException as exc:
                fut.set_exception(exc)

    def _fail_all(self, exc: ApiError) -> None:
        for req in self._sched.clear():
            if not req.future.done():
                with contextlib.suppress(Exception):
                    if not req.started:
                        req.future.set_running_or_notify_cancel()
                    req.future.set_exception(exc)

    def _run_batch(self, batch: Batch) -> None:
        items = [req.items[i] for req, i in batch]
        try:
            outs = self._forward(items, batch[0][0].model)
        except Exception as exc:
            if len({id(req) for req, _ in batch}) == 1:
                self._fail_request(batch[0][0], exc)
                return
            # Retry each request alone, so only the offending one fails.
            groups: dict[int, Batch] = {}
            for req, i in batch:
                groups.setdefault(id(req), []).append((req, i))
            for group in groups.values():
                self._run_batch(group)
            return
        if self.on_batch is not None:
            self._report_batch(batch[0][0].lane, items)
        for (req, i), emb in zip(batch, outs, strict=True):
            if req.future.done():
                continue
            req.results[i] = emb
            req.remaining -= 1
            if req.remaining == 0:
                req.future.set_result(req.results)

    def _report_batch(self, lane: str, items: list[Prepared]) -> None:
        real = sum(p.n_tokens for p in items)
        padded = padded_tokens(len(items), max(p.n_tokens for p in items))
        try:
            self.on_batch(lane, len(items), real, padded)  # type: ignore[misc]
        except Exception:
            log.exception("on_batch failed")

    def _forward(self, items: list[Prepared], model: str) -> list[Embedding]:
        self.forward_calls += 1
        self._dirty = True
        out = self.models.adapters[model].forward(items)
        self.items_computed += len(items)
        self.real_tokens += sum(p.n_tokens for p in items)
        self.padded_tokens += padded_tokens(len(items), max(p.n_tokens for p in items))
        return out

    def _fail_request(self, req: Request, exc: Exception) -> None:
        with self._cv:
            self._sched.remove(req)
            req.abandoned = True
        if not req.future.done():
            if not isinstance(exc, ApiError):
                log.exception("forward failed", exc_info=exc)
                exc = InternalError(f"the model failed on this input: {type(exc).__name__}: {exc}")
            req.future.set_exception(exc)
