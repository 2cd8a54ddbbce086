"""Pieces the per-token (multi-vector) adapters share: right-padded batches under a causal +
padding mask, image features merged into their placeholder tokens, per-token normalisation."""

from __future__ import annotations

import mlx.core as mx
import numpy as np


def right_padded(rows: list[np.ndarray], pad_id: int) -> np.ndarray:
    """(B, L) int32 with each row's real tokens first."""
    ids = np.full((len(rows), max(len(r) for r in rows)), pad_id, dtype=np.int32)
    for b, r in enumerate(rows):
        ids[b, : len(r)] = r
    return ids


def causal_padding_mask(key_real: np.ndarray) -> mx.array:
    """(B, 1, L, L) bool: causal, and only the keys ``key_real`` (B, L) marks. Every query
    keeps its first key (right padding: a real token), so no row is fully masked."""
    L = key_real.shape[1]
    causal = mx.tril(mx.ones((L, L), dtype=mx.bool_))
    return causal[None, None] & mx.array(key_real.astype(bool))[:, None, None, :]


def merge_image_features(
    embeds: mx.array, ids: np.ndarray, image_token_id: int, feats: mx.array
) -> mx.array:
    """Write ``feats`` (one row per image token, in batch order) over the image tokens."""
    B, L = ids.shape
    flat_pos = np.flatnonzero(ids.reshape(-1) == image_token_id)
    if len(flat_pos) != feats.shape[0]:
        raise RuntimeError(
            f"image features ({feats.shape[0]}) do not match image tokens ({len(flat_pos)})"
        )
    flat = embeds.reshape(B * L, -1)
    flat[mx.array(flat_pos)] = feats.astype(flat.dtype)
    return flat.reshape(B, L, -1)


def l2_normalized(x: mx.array) -> np.ndarray:
    """float32 rows of unit length (as float32 numpy)."""
    x = x.astype(mx.float32)
    return np.array(x / mx.maximum(mx.linalg.norm(x, axis=-1, keepdims=True), 1e-12), copy=False)
