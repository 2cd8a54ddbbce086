"""Embedding vectors on the wire: ``dimensions`` handling, float / base64 encoding, JSON bytes.

* ``float``: a list of floats (pooled) or ``n_tokens`` lists of ``dim`` floats (multi-vector).
* ``base64``: the item's float32 array, little-endian, row-major — for a multi-vector item
  ``n_tokens * dim`` floats, with ``"shape": [n_tokens, dim]`` alongside. The official ``openai``
  client asks for base64 by default and decodes it into one flat list.

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


def encode_vectors(vectors: np.ndarray, encoding_format: str) -> np.ndarray | str:
    """The value of an item's ``embedding`` field (an array is serialised by ``dumps``)."""
    if encoding_format == "base64":
        return encode_base64(vectors)
    if encoding_format == "float":
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
) -> dict[str, Any]:
    item: dict[str, Any] = {
        "object": "embedding",
        "embedding": encode_vectors(vectors, encoding_format),
        "index": index,
    }
    if vectors.ndim == 2:
        item["shape"] = [int(vectors.shape[0]), int(vectors.shape[1])]
    if extensions:
        for key, value in extensions.items():
            item.setdefault(key, value)
    return item


def floats_in(vectors: list[np.ndarray]) -> int:
    return sum(int(v.size) for v in vectors)
