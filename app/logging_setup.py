"""One logging configuration for the server, its engine thread and Sanic's loggers."""

from __future__ import annotations

import logging

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def setup_logging(level: str = "info") -> None:
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r} (debug, info, warning, error)")
    logging.basicConfig(level=numeric, format=FORMAT, force=True)
    # Sanic's loggers propagate to ours (the app is created with configure_logging=False).
    for name in ("sanic.root", "sanic.error", "sanic.server", "sanic.websockets"):
        logging.getLogger(name).setLevel(numeric)
    logging.getLogger("sanic.access").setLevel(
        logging.INFO if numeric <= logging.DEBUG else logging.WARNING
    )
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(numeric, logging.WARNING))
