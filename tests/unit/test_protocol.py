"""app.protocol: request validation (errors carry the field path as param) and response models."""

from __future__ import annotations

import pytest

from app.errors import InvalidRequest
from app.protocol import EmbeddingRequest, EmbeddingResponse, parse_embedding_request


def test_defaults() -> None:
    req = parse_embedding_request({"model": "m", "input": "x"})
    assert req == EmbeddingRequest(input="x", model="m")
    assert req.encoding_format == "float" and req.dimensions is None
    assert req.user is None and req.truncate is False


def test_unknown_fields_are_ignored() -> None:
    req = parse_embedding_request({"model": "m", "input": ["a"], "whatever": 1, "user": "u"})
    assert req.input == ["a"] and req.user == "u"


def test_input_is_any_json() -> None:
    raw = [{"type": "text", "text": "a"}, [1, 2]]
    assert parse_embedding_request({"model": "m", "input": raw}).input == raw


def test_null_encoding_format_means_float() -> None:
    req = parse_embedding_request({"model": "m", "input": "x", "encoding_format": None})
    assert req.encoding_format == "float"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "x"}, "model"),
        ({"model": "m"}, "input"),
        ({"model": "m", "input": None}, "input"),
        ({"model": None, "input": "x"}, "model"),
        ({"model": "m", "input": "x", "encoding_format": "binary"}, "encoding_format"),
        ({"model": "m", "input": "x", "dimensions": 0}, "dimensions"),
        ({"model": "m", "input": "x", "dimensions": 1.5}, "dimensions"),
        ({"model": "m", "input": "x", "dimensions": False}, "dimensions"),
        ({"model": "m", "input": "x", "truncate": 1}, "truncate"),
        ({"model": "m", "input": "x", "user": ["u"]}, "user"),
    ],
)
def test_errors_name_the_field(body: dict, param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_embedding_request(body)
    assert info.value.param == param
    assert info.value.status == 400
    assert param in info.value.message


@pytest.mark.parametrize("body", [[], "x", 3, None, True])
def test_non_object_body(body) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_embedding_request(body)
    assert "JSON object" in info.value.message


def test_missing_field_message() -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_embedding_request({"input": "x"})
    assert info.value.message == "'model' is required"


def test_response_model_accepts_both_encodings_and_extensions() -> None:
    body = {
        "object": "list",
        "model": "m",
        "usage": {"prompt_tokens": 3, "total_tokens": 3},
        "data": [
            {"object": "embedding", "index": 0, "embedding": [[0.1, 0.2]], "shape": [1, 2]},
            {"object": "embedding", "index": 1, "embedding": "AAAAAA==", "shape": [1, 1]},
            {"object": "embedding", "index": 2, "embedding": [0.5], "input_index": 1, "page": 2},
        ],
    }
    resp = EmbeddingResponse.model_validate(body)
    assert resp.data[2].page == 2 and resp.data[0].shape == [1, 2]
