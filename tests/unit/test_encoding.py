"""app.encoding: float / base64 wire forms, dimensions rules, JSON bytes."""

from __future__ import annotations

import base64

import numpy as np
import orjson
import pytest

from app.encoding import (
    apply_dimensions,
    check_dimensions,
    decode_base64,
    dumps,
    embedding_item,
    encode_base64,
    encode_vectors,
)
from app.engine.base import ModelInfo
from app.errors import InvalidRequest


def info(dim: int = 8, matryoshka: bool = False) -> ModelInfo:
    return ModelInfo(
        name="m",
        kind="pooled",
        dim=dim,
        modalities=("text",),
        max_tokens=16,
        fingerprint="f",
        extra={"matryoshka": matryoshka},
    )


def rng_vectors(*shape: int) -> np.ndarray:
    return np.random.default_rng(0).standard_normal(shape).astype(np.float32)


def test_base64_is_little_endian_row_major_float32() -> None:
    vec = rng_vectors(3, 4)
    raw = base64.b64decode(encode_base64(vec))
    assert len(raw) == 3 * 4 * 4
    np.testing.assert_array_equal(np.frombuffer(raw, dtype="<f4"), vec.ravel(order="C"))
    np.testing.assert_array_equal(decode_base64(encode_base64(vec), [3, 4]), vec)


def test_base64_of_non_contiguous_and_float64_input() -> None:
    vec = rng_vectors(4, 6)[:, ::2]
    np.testing.assert_array_equal(decode_base64(encode_base64(vec), vec.shape), vec)
    as64 = vec.astype(np.float64)
    np.testing.assert_array_equal(decode_base64(encode_base64(as64), vec.shape), vec)


def test_float_json_round_trips_float32_exactly() -> None:
    vec = rng_vectors(5, 7)
    parsed = orjson.loads(dumps({"e": encode_vectors(vec, "float")}))["e"]
    np.testing.assert_array_equal(np.asarray(parsed, dtype=np.float32), vec)


def test_embedding_item_shapes() -> None:
    mv = embedding_item(rng_vectors(3, 4), 2, "base64", {"page": 1})
    assert mv["shape"] == [3, 4] and mv["index"] == 2 and mv["page"] == 1
    assert isinstance(mv["embedding"], str)
    pooled = embedding_item(rng_vectors(4), 0, "float")
    assert "shape" not in pooled
    assert orjson.loads(dumps(pooled))["embedding"] == pytest.approx(rng_vectors(4).tolist())


def test_unknown_encoding_format() -> None:
    with pytest.raises(InvalidRequest) as err:
        encode_vectors(rng_vectors(2), "int8")
    assert err.value.param == "encoding_format"


@pytest.mark.parametrize("dimensions", [None, 8])
def test_dimensions_none_or_equal_is_a_no_op(dimensions) -> None:
    check_dimensions(dimensions, info(8))
    vec = rng_vectors(2, 8)
    assert apply_dimensions(vec, dimensions) is vec


@pytest.mark.parametrize(
    ("dimensions", "matryoshka"), [(9, True), (9, False), (4, False), (0, True)]
)
def test_dimensions_rejected(dimensions: int, matryoshka: bool) -> None:
    with pytest.raises(InvalidRequest) as err:
        check_dimensions(dimensions, info(8, matryoshka))
    assert err.value.param == "dimensions" and err.value.status == 400


def test_matryoshka_cut_renormalises_each_vector() -> None:
    check_dimensions(4, info(8, matryoshka=True))
    vec = rng_vectors(3, 8)
    cut = apply_dimensions(vec, 4)
    assert cut.shape == (3, 4) and cut.dtype == np.float32 and cut.flags.c_contiguous
    np.testing.assert_allclose(np.linalg.norm(cut, axis=-1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(cut, vec[:, :4] / np.linalg.norm(vec[:, :4], axis=-1, keepdims=True))
    zero = apply_dimensions(np.zeros(8, np.float32), 4)
    np.testing.assert_array_equal(zero, np.zeros(4))
