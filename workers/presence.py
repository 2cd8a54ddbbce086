"""A worker's background thread: announces it is alive (``mlxemb:workers``) and runs the job
watchdog/sweeper, so jobs heal even when no server is waiting on them."""

from __future__ import annotations

import logging
import threading

import redis

from app import jobs

log = logging.getLogger(__name__)


class Presence:
    def __init__(
        self,
        client: redis.Redis,
        name: str,
        queue: str,
        model: str,
        *,
        interval: float = jobs.BEAT_INTERVAL,
        maintenance_every: float = 2.0,
        orphan_timeout: float = 300.0,
    ) -> None:
        self.client = client
        self.name = name
        self.queue = queue
        self.model = model
        self.interval = interval
        self.maintenance_every = maintenance_every
        self.orphan_timeout = orphan_timeout
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"presence-{name}", daemon=True)

    def start(self) -> Presence:
        self._beat()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2.0)
        try:
            jobs.worker_gone(self.client, self.name)
        except Exception:
            log.debug("could not unregister worker %s", self.name, exc_info=True)

    def _beat(self) -> None:
        jobs.worker_beat(self.client, self.name, self.queue, self.model)

    def _run(self) -> None:
        failing = False
        ticks = 0
        every = max(1, round(self.maintenance_every / self.interval))
        while not self._stop.wait(self.interval):
            try:
                self._beat()
                ticks += 1
                if ticks % every == 0:
                    jobs.maintain(
                        self.client,
                        orphan_timeout=self.orphan_timeout,
                        interval=self.maintenance_every,
                    )
                failing = False
            except Exception as exc:
                if not failing:
                    log.warning("worker %s: Redis heartbeat failed (%s); retrying", self.name, exc)
                failing = True
