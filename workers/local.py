"""The server's in-process worker: an RQ ``SimpleWorker`` on a thread that shares the server's
already-loaded engine (and so its single MLX thread; no second copy of the weights).

RQ 3.0 facts this works around: ``work()`` installs signal handlers (ValueError off the main
thread) and the default death penalty uses SIGALRM, so this worker uses ``TimerDeathPenalty``
and no signal handlers; an idle worker only notices a stop request between dequeues, so it
dequeues with a 1 s timeout (``worker_ttl=16``); ``send_shutdown_command`` would SIGINT the
whole server, so stop() just sets the stop flag.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
from typing import Any

from rq import Queue, SimpleWorker
from rq.exceptions import StopRequested
from rq.timeouts import TimerDeathPenalty

from app.settings import Settings
from workers import runtime
from workers.presence import Presence

log = logging.getLogger(__name__)


class ThreadWorker(SimpleWorker):
    death_penalty_class = TimerDeathPenalty

    def _install_signal_handlers(self) -> None:
        pass

    def dequeue_job_and_maintain_ttl(self, timeout: int | None, max_idle_time: int | None = None):
        # RQ keeps blocking across dequeue timeouts; come up for air every second to see stop().
        while not self._stop_requested:
            result = super().dequeue_job_and_maintain_ttl(timeout, max_idle_time=1)
            if result is not None:
                return result
        raise StopRequested()


def worker_name(kind: str) -> str:
    return f"{kind}-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class LocalWorker:
    def __init__(
        self,
        handle: Any,
        settings: Settings,
        engine: Any,
        *,
        name: str | None = None,
        orphan_timeout: float = 300.0,
        logging_level: str = "WARNING",
    ) -> None:
        self.handle = handle
        self.settings = settings
        self.engine = engine
        self.name = name or worker_name("local")
        self.orphan_timeout = orphan_timeout
        self.logging_level = logging_level
        self._thread: threading.Thread | None = None
        self._worker: ThreadWorker | None = None
        self._presence: Presence | None = None

    def start(self) -> LocalWorker:
        runtime.set_engine(self.engine, self.settings)
        conn = self.handle.sync_client()
        queue = Queue(self.settings.queue_name, connection=conn)
        self._worker = ThreadWorker([queue], connection=conn, name=self.name, worker_ttl=16)
        self._presence = Presence(
            self.handle.sync_client(),
            self.name,
            self.settings.queue_name,
            self.settings.model_name,
            orphan_timeout=self.orphan_timeout,
        ).start()
        self._thread = threading.Thread(target=self._run, name=f"rq-{self.name}", daemon=True)
        self._thread.start()
        log.info(
            "local worker %s serving model %s on queue %r (%s)",
            self.name, self.settings.model_name, self.settings.queue_name, self.handle.url,
        )  # fmt: skip
        return self

    def _run(self) -> None:
        assert self._worker is not None
        try:
            self._worker.work(logging_level=self.logging_level)
        except Exception:
            log.exception("local worker %s crashed", self.name)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 1.5) -> None:
        """Ask the worker to stop; returns within ``timeout`` (a running chunk finishes on its
        own, and its job is healed by the watchdog if the process exits first)."""
        if self._worker is not None:
            self._worker._stop_requested = True
        if self._thread is not None:
            self._thread.join(timeout)
        if self._presence is not None:
            self._presence.stop()
