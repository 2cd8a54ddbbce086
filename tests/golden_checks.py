"""The goldens bound the engine tests share: per-vector cosine and max abs difference."""

from __future__ import annotations

import numpy as np

COSINE_MIN = 0.9999
ABS_MAX = 1e-4


def cosines(ours: np.ndarray, ref: np.ndarray) -> np.ndarray:
    return (ours * ref).sum(-1) / (np.linalg.norm(ours, axis=-1) * np.linalg.norm(ref, axis=-1))


def assert_matches(ours: np.ndarray, ref: np.ndarray, what: str) -> None:
    """Same shape, finite, every vector's cosine >= COSINE_MIN and |diff| <= ABS_MAX."""
    assert ours.shape == ref.shape, f"{what}: shape {ours.shape} != {ref.shape}"
    assert np.isfinite(ours).all(), f"{what}: not finite"
    cos = cosines(ours, ref)
    assert cos.min() >= COSINE_MIN, f"{what}: min cosine {cos.min():.6f}"
    assert np.abs(ours - ref).max() <= ABS_MAX, f"{what}: max abs diff {np.abs(ours - ref).max()}"
