"""GET /v1/models, /v1/models/<id> (ids with '/'), /health, and the unprefixed aliases."""

from __future__ import annotations

import time

import openai
import pytest
from http_servers import MV_MODEL, MV_SETTINGS, POOLED_MODEL, Served

from app.protocol import ErrorResponse, ModelCard, ModelList


@pytest.mark.parametrize("path", ["/v1/models", "/models"])
def test_list_models(mv_server: Served, path: str) -> None:
    with mv_server.client() as client:
        r = client.get(path)
    assert r.status_code == 200
    listing = ModelList.model_validate(r.json())
    [card] = listing.data
    assert card.id == MV_MODEL and card.object == "model"
    assert card.owned_by and abs(card.created - time.time()) < 3600
    assert card.ready is True
    assert card.kind == "multi_vector" and card.dimensions == 8
    assert card.modalities == ["text", "image"] and card.max_tokens == 16
    assert card.dtype == "float32"
    assert card.limits is not None
    assert card.limits.max_inputs == MV_SETTINGS.max_inputs
    assert card.limits.max_tokens_per_request == MV_SETTINGS.max_tokens_per_request
    assert card.limits.max_body_bytes == MV_SETTINGS.max_body_bytes


@pytest.mark.parametrize("prefix", ["/v1", ""])
def test_get_model_with_slash_in_id(mv_server: Served, prefix: str) -> None:
    with mv_server.client() as client:
        r = client.get(f"{prefix}/models/{MV_MODEL}")
        encoded = client.get(f"{prefix}/models/{MV_MODEL.replace('/', '%2F')}")
    assert r.status_code == 200, r.text
    assert ModelCard.model_validate(r.json()).id == MV_MODEL
    assert encoded.status_code == 200 and encoded.json() == r.json()


def test_get_unknown_model(mv_server: Served) -> None:
    with mv_server.client() as client:
        r = client.get("/v1/models/someone/else")
    assert r.status_code == 404
    err = ErrorResponse.model_validate(r.json()).error
    assert err.code == "model_not_found" and err.param == "model"
    assert MV_MODEL in err.message


def test_openai_client_models(mv_server: Served) -> None:
    client = mv_server.openai()
    assert [m.id for m in client.models.list()] == [MV_MODEL]
    model = client.models.retrieve(MV_MODEL)
    assert model.id == MV_MODEL and model.model_extra["dimensions"] == 8
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope/nope")


def test_pooled_model_card(pooled_server: Served) -> None:
    with pooled_server.client() as client:
        card = client.get(f"/v1/models/{POOLED_MODEL}").json()
    assert card["kind"] == "pooled" and card["dimensions"] == 16 and card["modalities"] == ["text"]


def test_health_ok(mv_server: Served) -> None:
    with mv_server.client() as client:
        r = client.get("/health")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "model": MV_MODEL}


def test_health_probes_add_fields_and_can_degrade(make_server) -> None:
    served = make_server()

    async def redis_probe():
        return True, {"redis": "ok"}

    async def worker_probe():
        return False, {"workers": 0}

    served.app.ctx.health_probes.append(redis_probe)
    with served.client() as client:
        assert client.get("/health").json()["redis"] == "ok"
        served.app.ctx.health_probes.append(worker_probe)
        r = client.get("/health")
    assert r.status_code == 503
    assert r.json()["status"] == "degraded" and r.json()["workers"] == 0
