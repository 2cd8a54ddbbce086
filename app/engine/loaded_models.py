"""The models of one engine, by name, in load order: loaded one after the other on the MLX
thread, with what each took and which one failed."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

from app.engine.base import Adapter

log = logging.getLogger(__name__)

Loader = Callable[[], Adapter]


class LoadedModels:
    def __init__(self, loaders: Loader | Mapping[str, Loader]) -> None:
        loaders = loaders if isinstance(loaders, Mapping) else {"": loaders}
        if not loaders:
            raise ValueError("an engine needs at least one model")
        self._loaders: dict[str, Loader] = dict(loaders)
        self.names: list[str] = list(loaders)
        self.adapters: dict[str, Adapter] = {}
        self.error: BaseException | None = None
        self.failed: str | None = None  # the model whose load failed
        self.memory: dict[str, int | None] = {}  # MLX bytes each model added at load
        self.seconds: float | None = None  # all of them

    def key(self, model: str | None) -> str:
        """The model's key: the first model for None; a one-model engine answers to any name
        (the server's settings name it)."""
        if model is None or len(self.names) == 1:
            return self.names[0]
        if model not in self._loaders:
            raise KeyError(f"no model {model!r} in this engine ({', '.join(self.names)})")
        return model

    def load(self) -> bool:
        """Load every model (call on the MLX thread); False (``error`` set) if one fails."""
        from app.engine.memory import active_bytes

        t0 = time.monotonic()
        for name, load in self._loaders.items():
            t, before = time.monotonic(), active_bytes()
            try:
                adapter = load()
            except BaseException as exc:  # reported through wait_ready / health / the CLIs
                log.debug("model %s failed to load", name or "-", exc_info=exc)
                self.error, self.failed = exc, name
                return False
            self.adapters[name] = adapter
            seconds = time.monotonic() - t
            after = active_bytes()
            mib = after - before if after is not None and before is not None else None
            self.memory[name] = mib
            if len(self._loaders) > 1:
                log.info(
                    "model %s loaded in %.1f s (%s)", name, seconds,
                    f"{mib / 2**20:.0f} MiB" if mib is not None else "memory unknown",
                )  # fmt: skip
        self.seconds = time.monotonic() - t0
        return True
