"""Every error status over a real socket, always as an OpenAI error body."""

from __future__ import annotations

import dataclasses
import logging
import threading

import httpx
import openai
import pytest
from fake_adapter import FakeAdapter, fake_engine
from http_servers import MV_MODEL, MV_SETTINGS, Served

from app.protocol import ErrorResponse


def assert_error(
    r: httpx.Response, status: int, *, code: str | None = None, param: str | None = None
) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    err = ErrorResponse.model_validate(r.json()).error
    assert err.type == ("server_error" if status >= 500 else "invalid_request_error")
    assert err.code == code, err
    assert err.param == param, err
    assert err.message
    return r.json()["error"]


def post(served: Served, body, **kw) -> httpx.Response:
    with served.client() as client:
        if isinstance(body, bytes | str):
            return client.post("/v1/embeddings", content=body, **kw)
        return client.post("/v1/embeddings", json=body, **kw)


# ---- 400: the request body ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "x"}, "model"),
        ({"model": MV_MODEL}, "input"),
        ({"model": MV_MODEL, "input": None}, "input"),
        ({"model": 7, "input": "x"}, "model"),
        ({"model": MV_MODEL, "input": "x", "encoding_format": "int8"}, "encoding_format"),
        ({"model": MV_MODEL, "input": "x", "dimensions": 0}, "dimensions"),
        ({"model": MV_MODEL, "input": "x", "dimensions": -3}, "dimensions"),
        ({"model": MV_MODEL, "input": "x", "dimensions": "8"}, "dimensions"),
        ({"model": MV_MODEL, "input": "x", "dimensions": True}, "dimensions"),
        ({"model": MV_MODEL, "input": "x", "truncate": "yes"}, "truncate"),
        ({"model": MV_MODEL, "input": "x", "user": 5}, "user"),
    ],
)
def test_invalid_fields_name_their_param(mv_server: Served, body: dict, param: str) -> None:
    assert_error(post(mv_server, body), 400, param=param)


def test_bad_encoding_format_message(mv_server: Served) -> None:
    err = assert_error(
        post(mv_server, {"model": MV_MODEL, "input": "x", "encoding_format": "int8"}),
        400,
        param="encoding_format",
    )
    assert "float" in err["message"] and "base64" in err["message"]


@pytest.mark.parametrize(
    ("raw_input", "param"),
    [
        (123, "input"),
        ({"text": "x"}, "input"),
        ("", "input"),
        ([], "input"),
        (["ok", ""], "input[1]"),
        (["ok", 3.5], "input[1]"),
        (["ok", {"type": "video", "url": "x"}], "input[1].type"),
        ([[1, 2], [3, "a"]], "input[1]"),
        ([[1, 2], []], "input[1]"),
    ],
)
def test_bad_input_types(mv_server: Served, raw_input, param: str) -> None:
    r = post(mv_server, {"model": MV_MODEL, "input": raw_input})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error"
    # the resolver may point inside the item ("input[1].type"); it must name the item
    assert err["param"] == param or err["param"].startswith(param + "."), err


def test_too_many_inputs(mv_server: Served) -> None:
    err = assert_error(post(mv_server, {"model": MV_MODEL, "input": ["x"] * 9}), 400, param="input")
    assert "8" in err["message"]


def test_too_long_input_without_truncate(mv_server: Served) -> None:
    long = " ".join(f"w{i}" for i in range(20))
    err = assert_error(
        post(mv_server, {"model": MV_MODEL, "input": ["short", long]}),
        400,
        code="context_length_exceeded",
        param="input[1]",
    )
    assert err["message"].startswith("input[1]: ")
    assert "16" in err["message"] and "20" in err["message"]


def test_too_many_tokens_in_one_request(mv_server: Served) -> None:
    fifteen = " ".join(["w"] * 15)
    err = assert_error(
        post(mv_server, {"model": MV_MODEL, "input": [fifteen] * 3}), 400, param="input"
    )
    assert "45" in err["message"] and "40" in err["message"]


def test_invalid_token_ids(make_server) -> None:
    mv_server = make_server(dataclasses.replace(MV_SETTINGS, token_ids="model"))
    err = assert_error(
        post(mv_server, {"model": MV_MODEL, "input": [[1, 2], [3, 100000]]}),
        400,
        code="invalid_token_ids",
        param="input[1]",
    )
    assert "100000" in err["message"]


@pytest.mark.parametrize("dimensions", [4, 9])
def test_dimensions_not_supported(mv_server: Served, dimensions: int) -> None:
    body = {"model": MV_MODEL, "input": "x", "dimensions": dimensions}
    err = assert_error(post(mv_server, body), 400, param="dimensions")
    assert "8" in err["message"]


def test_malformed_json(mv_server: Served) -> None:
    headers = {"content-type": "application/json"}
    assert_error(post(mv_server, b'{"model": "x", ', headers=headers), 400)


@pytest.mark.parametrize("body", [b"[1, 2]", b'"text"', b"42", b"null"])
def test_non_object_json(mv_server: Served, body: bytes) -> None:
    headers = {"content-type": "application/json"}
    assert_error(post(mv_server, body, headers=headers), 400)


def test_empty_body(mv_server: Served) -> None:
    assert_error(post(mv_server, b"", headers={"content-type": "application/json"}), 400)


def test_missing_content_type_with_json_body_is_accepted(mv_server: Served) -> None:
    # httpx sends no Content-Type for raw bytes; curl -d sends form-urlencoded
    r = post(mv_server, f'{{"model": "{MV_MODEL}", "input": "x"}}'.encode())
    assert r.status_code == 200, r.text
    r = post(
        mv_server,
        f'{{"model": "{MV_MODEL}", "input": "x"}}',
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 200, r.text


def test_non_json_body_with_other_content_type_is_415(mv_server: Served) -> None:
    r = post(mv_server, b"model=x&input=y", headers={"content-type": "text/plain"})
    assert_error(r, 415, code="unsupported_media_type")


def test_openai_client_raises_bad_request(mv_server: Served) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        mv_server.openai().embeddings.create(model=MV_MODEL, input="x", dimensions=3)
    assert info.value.status_code == 400
    assert info.value.body["param"] == "dimensions"


# ---- 404 / 405 / 413 ---------------------------------------------------------------------------


def test_unknown_model(mv_server: Served) -> None:
    err = assert_error(
        post(mv_server, {"model": "text-embedding-3-small", "input": "x"}),
        404,
        code="model_not_found",
        param="model",
    )
    assert MV_MODEL in err["message"]
    with pytest.raises(openai.NotFoundError):
        mv_server.openai().embeddings.create(model="nope", input="x")


@pytest.mark.parametrize("path", ["/v2/embeddings", "/", "/v1/embeddings/extra/bits"])
def test_unknown_route(mv_server: Served, path: str) -> None:
    with mv_server.client() as client:
        assert_error(client.get(path), 404, code="not_found")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/embeddings"),
        ("PUT", "/v1/embeddings"),
        ("POST", "/v1/models"),
        ("DELETE", "/health"),
    ],
)
def test_wrong_method(mv_server: Served, method: str, path: str) -> None:
    with mv_server.client() as client:
        r = client.request(method, path)
    assert_error(r, 405, code="method_not_allowed")
    assert r.headers.get("allow")


def test_oversize_body_is_413(mv_server: Served) -> None:
    big = {"model": MV_MODEL, "input": "x" * (MV_SETTINGS.max_body_bytes + 10)}
    err = assert_error(post(mv_server, big), 413, code="payload_too_large")
    assert str(MV_SETTINGS.max_body_bytes) in err["message"]
    # the server is fine afterwards
    assert post(mv_server, {"model": MV_MODEL, "input": "x"}).status_code == 200


def test_a_long_url_is_414_and_large_headers_are_431_not_413(mv_server: Served) -> None:
    with mv_server.client() as client:
        r = client.get("/v1/models?q=" + "x" * 10_000)
        err = assert_error(r, 414, code="uri_too_long")
        assert "URL" in err["message"] and "max-body-bytes" not in err["message"]
    with mv_server.client() as client:
        r = client.get("/v1/models", headers={"X-Big": "y" * 9_000})
        err = assert_error(r, 431, code="headers_too_large")
        assert "headers" in err["message"]
    assert post(mv_server, {"model": MV_MODEL, "input": "x"}).status_code == 200


def test_a_client_that_disconnects_is_logged_as_cancelled_not_as_an_error(
    make_server, caplog: pytest.LogCaptureFixture
) -> None:
    import socket
    import time

    served = make_server(adapter=FakeAdapter(forward_delay=1.0))
    host, port = served.url.removeprefix("http://").split(":")
    body = b'{"model": "%s", "input": "slow"}' % MV_MODEL.encode()
    with caplog.at_level(logging.INFO, logger="app.server"):
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: "
                         b"application/json\r\nContent-Length: %d\r\n\r\n%s"
                         % (len(body), body))  # fmt: skip
            time.sleep(0.3)
        time.sleep(1.5)
    server_records = [rec for rec in caplog.records if rec.name == "app.server"]
    assert not [rec for rec in server_records if rec.levelno >= logging.ERROR], caplog.text
    assert any("cancelled by the client" in rec.getMessage() for rec in server_records)


# ---- 5xx ---------------------------------------------------------------------------------------


class _BrokenResolver:
    max_image_pixels_for_model = None

    async def resolve(self, raw_input):
        raise ValueError("secret internal detail")

    async def aclose(self) -> None:
        pass


def test_unexpected_exception_is_a_generic_500_with_a_logged_traceback(
    make_server, caplog: pytest.LogCaptureFixture
) -> None:
    served = make_server(resolver=_BrokenResolver())
    with caplog.at_level(logging.ERROR, logger="app.server"):
        r = post(served, {"model": MV_MODEL, "input": "x"})
    err = assert_error(r, 500, code="internal_error")
    assert "secret" not in err["message"]
    records = [rec for rec in caplog.records if rec.name == "app.server"]
    assert records and records[-1].exc_info is not None
    assert "secret internal detail" in caplog.text


def test_health_and_requests_while_loading(make_server) -> None:
    gate = threading.Event()
    engine = fake_engine(FakeAdapter(name=MV_MODEL), load_gate=gate)
    served = make_server(engine=engine, wait_ready=False)
    with served.client() as client:
        r = client.get("/health")
        assert r.status_code == 503 and r.json()["status"] == "loading"
        assert_error(
            client.post("/v1/embeddings", json={"model": MV_MODEL, "input": "x"}),
            503,
            code="model_not_ready",
        )
        models = client.get("/v1/models").json()["data"]
        assert models[0]["id"] == MV_MODEL and models[0]["ready"] is False
        gate.set()
        engine.wait_ready(10)
        r = client.get("/health")
        assert r.status_code == 200
        assert r.json() == {"status": "ok", "model": MV_MODEL}
        ok = client.post("/v1/embeddings", json={"model": MV_MODEL, "input": "x"})
        assert ok.status_code == 200


def test_health_after_failed_load(make_server) -> None:
    engine = fake_engine(load_error=FileNotFoundError("no weights at /models/x"))
    served = make_server(engine=engine, wait_ready=False)
    with pytest.raises(RuntimeError):
        engine.wait_ready(10)
    with served.client() as client:
        r = client.get("/health")
        assert r.status_code == 503
        assert r.json()["status"] == "error"
        assert "no weights at /models/x" in r.json()["error"]
        assert_error(
            client.post("/v1/embeddings", json={"model": MV_MODEL, "input": "x"}),
            503,
            code="model_not_ready",
        )


def test_model_checked_before_anything_else(make_server) -> None:
    settings = dataclasses.replace(MV_SETTINGS, served_model_name="other/name")
    served = make_server(settings, FakeAdapter(name="other/name"))
    assert_error(
        post(served, {"model": MV_MODEL, "input": ""}), 404, code="model_not_found", param="model"
    )
