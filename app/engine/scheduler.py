"""The queues in front of the MLX thread: two lanes, bulk owners taking turns, batches bounded
by items and padded tokens. A plain data structure: the runner holds the lock around every call.

``interactive`` work is taken first, but after ``interactive_burst`` interactive batches in a
row one bulk batch runs, so bulk keeps moving. Bulk requests take turns by owner (a request or
a job); a bulk request's items are taken shortest first, so a batch holds similar lengths (less
padding). While interactive requests keep arriving, bulk batches are cut to
``busy_bulk_batch_size`` so a query waits for a small batch, not a full one. With several
models on the one thread, a batch holds one model's items only (the first request taken decides
which); ``queued_for`` counts each model's items, so each model has its own queue bounds.
"""

from __future__ import annotations

import collections
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field

from app.engine.base import Embedding, Prepared

INTERACTIVE, BULK = "interactive", "bulk"
LANES = (INTERACTIVE, BULK)
BUSY_WINDOW = 2.0  # seconds since the last interactive request that count as "busy"

Batch = list[tuple["Request", int]]


@dataclass
class Request:
    items: list[Prepared]
    future: Future
    lane: str
    owner: object
    order: list[int]  # the order its items are taken in
    results: list[Embedding | None] = field(default_factory=list)
    next_item: int = 0  # position in ``order``
    remaining: int = 0
    abandoned: bool = False
    started: bool = False
    model: str = ""

    @classmethod
    def make(cls, items: list[Prepared], lane: str, owner: object, model: str = "") -> Request:
        fut: Future = Future()
        order = list(range(len(items)))
        if lane == BULK:
            order.sort(key=lambda i: items[i].n_tokens)
        return cls(list(items), fut, lane, owner if owner is not None else fut, order,
                   results=[None] * len(items), remaining=len(items), model=model)  # fmt: skip

    @property
    def pending(self) -> int:
        return len(self.items) - self.next_item


def padded_tokens(n_items: int, longest: int) -> int:
    return n_items * max(1, longest)


class Scheduler:
    def __init__(
        self,
        *,
        max_batch_size: int,
        max_batch_tokens: int,
        interactive_burst: int = 4,
        busy_bulk_batch_size: int | None = None,
    ) -> None:
        self.max_batch_size = max(1, max_batch_size)
        self.max_batch_tokens = max(1, max_batch_tokens)
        self.interactive_burst = max(1, interactive_burst)
        self.busy_bulk_batch_size = max(1, busy_bulk_batch_size or self.max_batch_size // 4)
        self.busy_window = BUSY_WINDOW
        self.queued = {INTERACTIVE: 0, BULK: 0}
        self._by_model: Counter[tuple[str, str]] = Counter()  # (model, lane) -> items queued
        self._interactive: collections.deque[Request] = collections.deque()
        self._bulk: collections.OrderedDict[object, collections.deque[Request]] = (
            collections.OrderedDict()
        )
        self._limits = (self.max_batch_size, self.max_batch_tokens)
        self._streak = 0  # interactive batches in a row while bulk work waited
        self._last_interactive = -1e9

    # ---- queueing --------------------------------------------------------------------------
    def add(self, req: Request) -> None:
        if req.lane == INTERACTIVE:
            self._interactive.append(req)
            self._last_interactive = time.monotonic()
        elif req.owner in self._bulk:
            self._bulk[req.owner].append(req)
        else:  # a new owner goes first: the owners already served wait their turn
            self._bulk[req.owner] = collections.deque([req])
            self._bulk.move_to_end(req.owner, last=False)
        self._count(req, len(req.items))

    def _count(self, req: Request, n: int) -> None:
        self.queued[req.lane] += n
        self._by_model[req.model, req.lane] += n

    def queued_for(self, model: str, lane: str) -> int:
        """Items of ``model`` waiting in ``lane``."""
        return self._by_model[model, lane]

    def has_work(self) -> bool:
        return bool(self._interactive or self._bulk)

    def requests(self) -> Iterator[Request]:
        yield from self._interactive
        for queue in self._bulk.values():
            yield from queue

    def remove(self, req: Request) -> None:
        queue = self._interactive if req.lane == INTERACTIVE else self._bulk.get(req.owner)
        if queue is not None and req in queue:
            queue.remove(req)
            self._count(req, -req.pending)
            if req.lane == BULK and not queue:
                del self._bulk[req.owner]

    def clear(self) -> list[Request]:
        out = list(self.requests())
        self._interactive.clear()
        self._bulk.clear()
        self.queued = {INTERACTIVE: 0, BULK: 0}
        self._by_model.clear()
        return out

    # ---- batching --------------------------------------------------------------------------
    def next_batch(self) -> tuple[str, Batch]:
        """The lane to serve now and its batch (interactive batches may grow with ``fill``)."""
        if self._bulk and (not self._interactive or self._streak >= self.interactive_burst):
            self._streak = 0
            self._limits = self._bulk_limits()
            return BULK, self._pop_bulk()
        self._streak = self._streak + 1 if self._bulk else 0
        self._limits = (self.max_batch_size, self.max_batch_tokens)
        return INTERACTIVE, self.fill([])

    def room(self, batch: Batch) -> bool:
        return len(batch) < self._limits[0]

    def fill(self, batch: Batch) -> Batch:
        """Add queued interactive items of the batch's model to ``batch`` while they fit."""
        longest = max((r.items[i].n_tokens for r, i in batch), default=0)
        model = batch[0][0].model if batch else None
        for req in list(self._interactive):
            if not self.room(batch):
                break
            if model is not None and req.model != model:
                continue  # another model's request: a later batch
            if not self._usable(req):
                self._interactive.remove(req)
                continue
            model = req.model
            longest, done = self._take_from(req, batch, longest)
            if not done:
                break
            self._interactive.remove(req)
        return batch

    def _bulk_limits(self) -> tuple[int, int]:
        if time.monotonic() - self._last_interactive > self.busy_window:
            return self.max_batch_size, self.max_batch_tokens
        share = min(1.0, self.busy_bulk_batch_size / self.max_batch_size)
        return self.busy_bulk_batch_size, max(1, int(self.max_batch_tokens * share))

    def _fits(self, batch: Batch, longest: int, item: Prepared) -> bool:
        """Whether ``item`` may join ``batch`` (an empty batch takes anything)."""
        if not batch:
            return True
        n = max(longest, item.n_tokens)
        return self.room(batch) and padded_tokens(len(batch) + 1, n) <= self._limits[1]

    def _take_from(self, req: Request, batch: Batch, longest: int) -> tuple[int, bool]:
        """Move ``req``'s items into ``batch`` while they fit; (longest, req exhausted)."""
        req.started = True
        while req.next_item < len(req.items):
            i = req.order[req.next_item]
            item = req.items[i]
            if not self._fits(batch, longest, item):
                return longest, False
            batch.append((req, i))
            longest = max(longest, item.n_tokens)
            req.next_item += 1
            self._count(req, -1)
        return longest, True

    def _usable(self, req: Request) -> bool:
        """False for a request to drop (its caller went away); claims it otherwise."""
        if req.abandoned or (not req.started and not req.future.set_running_or_notify_cancel()):
            self._count(req, -req.pending)
            return False
        return True

    def _pop_bulk(self) -> Batch:
        """Round-robin over owners: each owner's oldest request gives what fits, then the next
        owner may fill the rest (with items of the same model)."""
        batch: Batch = []
        longest = 0
        model: str | None = None
        for owner in list(self._bulk):
            queue = self._bulk[owner]
            if model is not None and queue[0].model != model:
                continue  # this owner's next request is another model's: it keeps its turn
            while queue and self.room(batch):
                req = queue[0]
                if model is not None and req.model != model:
                    break
                if not self._usable(req):
                    queue.popleft()
                    continue
                model = req.model
                longest, done = self._take_from(req, batch, longest)
                if not done:
                    break
                queue.popleft()
            if queue:
                self._bulk.move_to_end(owner)
            else:
                del self._bulk[owner]
            if not self.room(batch) or (batch and queue):
                break
        return batch
