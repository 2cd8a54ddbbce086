"""embedding_type encodings (app.encoding.quantize and the base64 / array wire forms)."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from app.encoding import (
    decode_typed_base64,
    dequantize,
    embedding_item,
    encoded_shape,
    quantize,
)
from app.errors import InvalidRequest


@pytest.fixture
def vectors() -> np.ndarray:
    x = np.random.default_rng(0).standard_normal((5, 12)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_int8_and_uint8_rule(vectors: np.ndarray) -> None:
    q = quantize(vectors, "int8")
    assert q.dtype == np.int8
    np.testing.assert_array_equal(q, np.rint(vectors * 127).astype(np.int8))
    u = quantize(vectors, "uint8")
    assert u.dtype == np.uint8 and u.min() >= 1
    np.testing.assert_array_equal(u.astype(int), q.astype(int) + 128)
    np.testing.assert_allclose(dequantize(q, "int8"), vectors, atol=0.5 / 127 + 1e-7)
    np.testing.assert_allclose(dequantize(u, "uint8"), vectors, atol=0.5 / 127 + 1e-7)
    edge = quantize(np.array([1.0, -1.0, 1.2, 0.0], dtype=np.float32), "int8")
    assert edge.tolist() == [127, -127, 127, 0]


def test_binary_packs_sign_bits_msb_first(vectors: np.ndarray) -> None:
    ub = quantize(vectors, "ubinary")
    assert ub.shape == (5, 2) and ub.dtype == np.uint8
    bits = (vectors > 0).astype(int)
    first = int("".join(str(b) for b in bits[0, :8]), 2)
    assert ub[0, 0] == first
    assert ub[0, 1] == int("".join(str(b) for b in bits[0, 8:]) + "0000", 2)
    b = quantize(vectors, "binary")
    assert b.dtype == np.int8
    np.testing.assert_array_equal(b.astype(int), ub.astype(int) - 128)
    signs = dequantize(b, "binary", dim=12)
    np.testing.assert_array_equal(signs, np.where(vectors > 0, 1.0, -1.0))
    np.testing.assert_array_equal(dequantize(ub, "ubinary", dim=12), signs)


@pytest.mark.parametrize("kind", ["float", "float16", "int8", "uint8", "binary", "ubinary"])
def test_base64_and_arrays_agree(vectors: np.ndarray, kind: str) -> None:
    as_b64 = embedding_item(vectors, 0, "base64", embedding_type=kind)
    as_arr = embedding_item(vectors, 0, "float", embedding_type=kind)
    shape = as_b64["shape"]
    assert shape == as_arr["shape"] == encoded_shape(vectors, kind)
    assert shape == [5, 2 if "binary" in kind else 12]
    decoded = decode_typed_base64(as_b64["embedding"], kind, shape)
    np.testing.assert_array_equal(decoded, np.asarray(as_arr["embedding"]))
    n_bytes = len(base64.b64decode(as_b64["embedding"]))
    per_value = {"float": 4, "float16": 2}.get(kind, 1)
    assert n_bytes == shape[0] * shape[1] * per_value
    assert ("embedding_type" in as_b64) == (kind != "float")


def test_pooled_vector_has_no_shape() -> None:
    item = embedding_item(np.ones(16, dtype=np.float32) / 4, 0, "float", embedding_type="binary")
    assert "shape" not in item and np.asarray(item["embedding"]).shape == (2,)


def test_unknown_type_is_400() -> None:
    with pytest.raises(InvalidRequest) as exc:
        quantize(np.ones((1, 2)), "int4")
    assert exc.value.param == "embedding_type"
