"""Mean pooling of the image-token grid (app.ingest.pooling)."""

from __future__ import annotations

import numpy as np
import pytest

from app.ingest.pooling import maxsim, mean_pool_rows_columns, split_image_tokens, unit_rows


def _page(prefix: int, rows: int, cols: int, suffix: int, dim: int = 8) -> np.ndarray:
    rng = np.random.default_rng(rows * 100 + cols)
    return rng.standard_normal((prefix + rows * cols + suffix, dim)).astype(np.float32)


def test_rows_and_columns_are_means_of_the_row_major_grid() -> None:
    prefix, rows, cols, suffix = 3, 4, 5, 2
    vecs = _page(prefix, rows, cols, suffix)
    by_rows, by_cols = mean_pool_rows_columns(vecs, (rows, cols), (prefix, prefix + rows * cols))

    assert by_rows.shape == (prefix + rows + suffix, 8)
    assert by_cols.shape == (prefix + cols + suffix, 8)
    for r in range(rows):
        tokens = [vecs[prefix + r * cols + c] for c in range(cols)]
        np.testing.assert_allclose(by_rows[prefix + r], np.mean(tokens, axis=0), rtol=1e-6)
    for c in range(cols):
        tokens = [vecs[prefix + r * cols + c] for r in range(rows)]
        np.testing.assert_allclose(by_cols[prefix + c], np.mean(tokens, axis=0), rtol=1e-6)


def test_prompt_tokens_are_kept_unpooled_around_the_pooled_vectors() -> None:
    vecs = _page(2, 3, 3, 4)
    by_rows, by_cols = mean_pool_rows_columns(vecs, (3, 3), (2, 11))
    for pooled, n in ((by_rows, 3), (by_cols, 3)):
        np.testing.assert_array_equal(pooled[:2], vecs[:2])
        np.testing.assert_array_equal(pooled[2 + n :], vecs[11:])
    assert by_rows.dtype == np.float32 and by_cols.dtype == np.float32


def test_no_prompt_tokens() -> None:
    vecs = _page(0, 2, 3, 0)
    by_rows, by_cols = mean_pool_rows_columns(vecs, [2, 3], [0, 6])
    np.testing.assert_allclose(by_rows, vecs.reshape(2, 3, 8).mean(axis=1), rtol=1e-6)
    np.testing.assert_allclose(by_cols, vecs.reshape(2, 3, 8).mean(axis=0), rtol=1e-6)


@pytest.mark.parametrize(
    ("grid", "span"),
    [((3, 3), (2, 10)), ((2, 2), (0, 30)), ((0, 4), (2, 2)), ((3, 3), (5, 2))],
)
def test_grid_and_span_must_agree(grid: tuple[int, int], span: tuple[int, int]) -> None:
    with pytest.raises(ValueError):
        split_image_tokens(_page(2, 3, 3, 4), grid, span)


def test_maxsim_matches_the_definition() -> None:
    rng = np.random.default_rng(0)
    q, d = rng.standard_normal((4, 6)), rng.standard_normal((9, 6))
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    dn = d / np.linalg.norm(d, axis=1, keepdims=True)
    want = sum(max(float(qi @ dj) for dj in dn) for qi in qn)
    assert maxsim(q, d) == pytest.approx(want, rel=1e-9)


def test_unit_rows() -> None:
    v = np.array([[3.0, 4.0], [0.0, 0.0], [0.0, -2.0]], dtype=np.float32)
    np.testing.assert_allclose(unit_rows(v), [[0.6, 0.8], [0.0, 0.0], [0.0, -1.0]])
    assert unit_rows(v).dtype == np.float32
