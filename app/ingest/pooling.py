"""Mean pooling of a page's image-token grid, for the fast first stage (Qdrant's ColPali /
ColQwen recipe).

A page embedding is ``n_tokens`` vectors: prompt tokens, then ``rows x cols`` image tokens in
row-major order (``image_token_span`` = [start, end)), then more prompt tokens. We average the
image tokens over each row (one vector per row: ``mean_pooling_rows``) and over each column
(one vector per column: ``mean_pooling_columns``). The prompt tokens before and after the image
are kept unpooled around the pooled vectors, as in Qdrant's ColQwen tutorial: they are few
(about 20 of 700+) and carry page-level context the query can match.

Means of unit vectors are shorter than 1; the points store them rescaled to unit length
(``unit_rows``). Cosine ignores length, so scores do not change, but Qdrant's embedded local
mode does not re-normalise vectors it reloads from disk, and would score raw means wrongly.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def split_image_tokens(
    vectors: np.ndarray, grid: Sequence[int], span: Sequence[int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(prefix, image grid (rows, cols, dim), suffix) of one page embedding."""
    if vectors.ndim != 2:
        raise ValueError(f"a page embedding is a (n_tokens, dim) matrix, got shape {vectors.shape}")
    rows, cols = (int(x) for x in grid)
    start, end = (int(x) for x in span)
    if not 0 <= start <= end <= len(vectors):
        raise ValueError(f"image_token_span {list(span)} is outside the {len(vectors)} vectors")
    if rows * cols != end - start or rows < 1 or cols < 1:
        raise ValueError(
            f"image_grid {list(grid)} ({rows * cols} tokens) does not match image_token_span "
            f"{list(span)} ({end - start} tokens)"
        )
    image = vectors[start:end].reshape(rows, cols, vectors.shape[1])
    return vectors[:start], image, vectors[end:]


def mean_pool_rows_columns(
    vectors: np.ndarray, grid: Sequence[int], span: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """(by_rows, by_columns): prefix + one mean vector per grid row (resp. column) + suffix."""
    prefix, image, suffix = split_image_tokens(vectors, grid, span)
    by_rows = image.mean(axis=1, dtype=np.float32)  # (rows, dim)
    by_columns = image.mean(axis=0, dtype=np.float32)  # (cols, dim)
    return (
        np.concatenate([prefix, by_rows, suffix]).astype(np.float32, copy=False),
        np.concatenate([prefix, by_columns, suffix]).astype(np.float32, copy=False),
    )


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Each row scaled to length 1 (zero rows stay zero)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.where(norms > 0, norms, 1.0)).astype(np.float32, copy=False)


def maxsim(query: np.ndarray, doc: np.ndarray) -> float:
    """Late-interaction score: sum over query tokens of the best cosine with any doc token."""
    q = query / np.linalg.norm(query, axis=1, keepdims=True)
    d = doc / np.linalg.norm(doc, axis=1, keepdims=True)
    return float((q @ d.T).max(axis=1).sum())
