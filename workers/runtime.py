"""The process-wide registry through which RQ chunk jobs find the already-loaded engine.

A worker (CLI or the server's local worker) calls ``set_engine`` once at start; the chunk
function, imported by path by RQ, calls ``get_engine``/``get_settings``.
"""

from __future__ import annotations

import threading
from typing import Any

from app.settings import Settings

_lock = threading.Lock()
_state: dict[str, Any] = {}


def set_engine(engine: Any, settings: Settings) -> None:
    with _lock:
        _state["engine"] = engine
        _state["settings"] = settings


def clear() -> None:
    with _lock:
        _state.clear()


def get_engine() -> Any:
    engine = _state.get("engine")
    if engine is None:
        raise RuntimeError(
            "no engine registered in this process: run chunks with mlx-embeddings-worker or the "
            "server's local worker (workers.runtime.set_engine)"
        )
    return engine


def get_settings() -> Settings:
    settings = _state.get("settings")
    if settings is None:
        raise RuntimeError("no settings registered in this process (workers.runtime.set_engine)")
    return settings
