"""Embedding vectors on the wire: ``dimensions`` handling, float / base64 encoding, JSON bytes.

* ``float``: a list of floats (pooled) or ``n_tokens`` lists of ``dim`` floats (multi-vector).
* ``base64``: the item's float32 array, little-endian, row-major — for a multi-vector item
  ``n_tokens * dim`` floats, with ``"shape": [n_tokens, dim]`` alongside. The official ``openai``
  client asks for base64 by default and decodes it into one flat list.

``embedding_type`` (Cohere's names) chooses the numbers before that encoding:

* ``float`` (float32), ``float16``;
* ``int8``: ``round(x * 127)`` clipped to [-127, 127]; the vectors of every model here are unit
  length, so each component is in [-1, 1] and the rule needs no calibration. Divide by 127 to
  get floats back (dot products scale by 127², rankings are unchanged);
* ``uint8``: the int8 value + 128 (1..255);
* ``ubinary``: one bit per dimension, 1 where ``x > 0``, packed 8 to a byte, most significant
  bit first (``numpy.packbits``); ``binary``: the same bytes as int8 (``ubinary - 128``, as
  sentence-transformers' ``quantize_embeddings``). Each vector is ``ceil(dim / 8)`` bytes.

With ``base64`` the item is the raw little-endian bytes of that type; with ``float`` a JSON
array of its numbers. A multi-vector item's ``shape`` is the shape of what is encoded
(``[n_tokens, ceil(dim / 8)]`` for the binary types).

JSON is written with orjson, which serialises float32 numpy arrays directly (and prints each
float32 with its shortest round-tripping repr).
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import orjson

from app.engine.base import ModelInfo
from app.errors import InvalidRequest

_ORJSON_OPTS = orjson.OPT_SERIALIZE_NUMPY


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj, option=_ORJSON_OPTS)


def supports_matryoshka(info: ModelInfo) -> bool:
    return bool(info.extra.get("matryoshka"))


def check_dimensions(dimensions: int | None, info: ModelInfo) -> None:
    """Raise InvalidRequest(param="dimensions") unless the model can answer that width."""
    if dimensions is None or dimensions == info.dim:
        return
    if dimensions <= 0:
        raise InvalidRequest(f"dimensions must be positive, got {dimensions}", param="dimensions")
    if dimensions > info.dim:
        raise InvalidRequest(
            f"dimensions={dimensions} is larger than the model's embedding size {info.dim}",
            param="dimensions",
        )
    if not supports_matryoshka(info):
        raise InvalidRequest(
            f"model {info.name!r} does not support shortened embeddings: dimensions must be "
            f"omitted or equal to {info.dim}",
            param="dimensions",
        )


def apply_dimensions(vectors: np.ndarray, dimensions: int | None) -> np.ndarray:
    """Cut the last axis to ``dimensions`` and re-normalise each vector (matryoshka models).

    Call ``check_dimensions`` first; this assumes the cut is allowed."""
    if dimensions is None or dimensions >= vectors.shape[-1]:
        return vectors
    cut = vectors[..., :dimensions].astype(np.float32, copy=True)
    norms = np.linalg.norm(cut, axis=-1, keepdims=True)
    np.divide(cut, norms, out=cut, where=norms > 0)
    return cut


def to_float32(vectors: np.ndarray) -> np.ndarray:
    """C-contiguous float32 (what orjson serialises and what base64 carries)."""
    return np.ascontiguousarray(vectors, dtype=np.float32)


def encode_base64(vectors: np.ndarray) -> str:
    return base64.b64encode(to_float32(vectors).astype("<f4", copy=False).tobytes()).decode("ascii")


def decode_base64(text: str, shape: list[int] | tuple[int, ...] | None = None) -> np.ndarray:
    """Inverse of ``encode_base64`` (for clients and tests)."""
    arr = np.frombuffer(base64.b64decode(text), dtype="<f4").astype(np.float32)
    return arr.reshape(shape) if shape is not None else arr


EMBEDDING_TYPES = ("float", "float16", "int8", "uint8", "binary", "ubinary")
_WIRE_DTYPES = {"float": "<f4", "float16": "<f2", "int8": "i1", "uint8": "u1",
                "binary": "i1", "ubinary": "u1"}  # fmt: skip
# 2-D extras that are vectors too (app.pooling's rows_cols): encoded like the embedding.
VECTOR_EXTRAS = ("pooled_rows", "pooled_columns")


def quantize(vectors: np.ndarray, embedding_type: str) -> np.ndarray:
    """The vectors as ``embedding_type`` (the rules in the module docstring)."""
    v = np.asarray(vectors, dtype=np.float32)
    if embedding_type == "float":
        return np.ascontiguousarray(v)
    if embedding_type == "float16":
        return v.astype(np.float16)
    if embedding_type in ("int8", "uint8"):
        q = np.clip(np.rint(v * 127.0), -127, 127).astype(np.int16)
        return (q if embedding_type == "int8" else q + 128).astype(_WIRE_DTYPES[embedding_type])
    if embedding_type in ("binary", "ubinary"):
        bits = np.packbits(v > 0, axis=-1)
        return bits if embedding_type == "ubinary" else (bits.astype(np.int16) - 128).astype("i1")
    raise InvalidRequest(
        f"invalid embedding_type {embedding_type!r}: must be one of {', '.join(EMBEDDING_TYPES)}",
        param="embedding_type",
    )


def dequantize(data: np.ndarray, embedding_type: str, dim: int | None = None) -> np.ndarray:
    """Float32 vectors back from ``quantize`` (binary: +1 / -1 per bit; pass ``dim``)."""
    if embedding_type in ("float", "float16"):
        return data.astype(np.float32)
    if embedding_type == "int8":
        return data.astype(np.float32) / 127.0
    if embedding_type == "uint8":
        return (data.astype(np.float32) - 128.0) / 127.0
    raw = data.astype(np.int16) + (128 if embedding_type == "binary" else 0)
    bits = np.unpackbits(raw.astype(np.uint8), axis=-1, count=dim)
    return bits.astype(np.float32) * 2.0 - 1.0


def decode_typed_base64(
    text: str, embedding_type: str, shape: list[int] | tuple[int, ...] | None = None
) -> np.ndarray:
    """Inverse of the base64 of ``quantize(vectors, embedding_type)`` (for clients and tests)."""
    arr = np.frombuffer(base64.b64decode(text), dtype=_WIRE_DTYPES[embedding_type]).copy()
    return arr.reshape(shape) if shape is not None else arr


def encode_vectors(
    vectors: np.ndarray, encoding_format: str, embedding_type: str = "float"
) -> np.ndarray | str:
    """The value of an item's ``embedding`` field (an array is serialised by ``dumps``)."""
    if embedding_type != "float":
        data = quantize(vectors, embedding_type)
        if encoding_format == "base64":
            wire = data.astype(_WIRE_DTYPES[embedding_type], copy=False)
            return base64.b64encode(wire.tobytes()).decode("ascii")
        if encoding_format == "float":
            return data
    elif encoding_format == "base64":
        return encode_base64(vectors)
    elif encoding_format == "float":
        return to_float32(vectors)
    raise InvalidRequest(
        f"invalid encoding_format {encoding_format!r}: must be 'float' or 'base64'",
        param="encoding_format",
    )


def embedding_item(
    vectors: np.ndarray,
    index: int,
    encoding_format: str,
    extensions: dict[str, Any] | None = None,
    embedding_type: str = "float",
) -> dict[str, Any]:
    item: dict[str, Any] = {
        "object": "embedding",
        "embedding": encode_vectors(vectors, encoding_format, embedding_type),
        "index": index,
    }
    if vectors.ndim == 2:
        item["shape"] = encoded_shape(vectors, embedding_type)
    if embedding_type != "float":
        item["embedding_type"] = embedding_type
    for key, value in (extensions or {}).items():
        if key in VECTOR_EXTRAS:
            extra = np.asarray(value, dtype=np.float32)
            item[key] = encode_vectors(extra, encoding_format, embedding_type)
            item[f"{key}_shape"] = encoded_shape(extra, embedding_type)
        else:
            item.setdefault(key, value)
    return item


def encoded_shape(vectors: np.ndarray, embedding_type: str = "float") -> list[int]:
    width = int(vectors.shape[-1])
    if embedding_type in ("binary", "ubinary"):
        width = (width + 7) // 8
    return [*(int(x) for x in vectors.shape[:-1]), width]


def floats_in(vectors: list[np.ndarray]) -> int:
    return sum(int(v.size) for v in vectors)
