"""Thin HTTP routes: parse the request, call the service, write the response."""

from __future__ import annotations

from sanic import Sanic

from app.routes import batches, embeddings, health, jobs, metrics, models, scoring


def register_routes(app: Sanic) -> None:
    embeddings.register(app)
    jobs.register(app)
    models.register(app)
    health.register(app)
    metrics.register(app)
    scoring.register(app)
    batches.register(app)


__all__ = ["register_routes"]
