"""Hierarchical token pooling equals colpali-engine 0.3.18 (the committed goldens of
scripts/make_pooling_goldens.py); rows_cols pooling equals the ingest schema's vectors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.engine.base import Embedding
from app.errors import InvalidRequest
from app.ingest.pooling import mean_pool_rows_columns, unit_rows
from app.pooling import fcluster_maxclust, hierarchical_pool, pool_embedding, unpack, ward_linkage

GOLDENS = Path(__file__).resolve().parents[1] / "goldens"


@pytest.fixture(scope="module")
def golden() -> np.lib.npyio.NpzFile:
    return np.load(GOLDENS / "pooling_reference.npz")


@pytest.fixture(scope="module")
def colqwen() -> dict[str, np.ndarray]:
    ref = np.load(GOLDENS / "colqwen_reference.npz")
    return {k.removesuffix(".embeddings"): ref[k] for k in ref.files if k.endswith(".embeddings")}


def _labels(emb: np.ndarray, pool_factor: int) -> np.ndarray:
    z = ward_linkage(1.0 - emb @ emb.T)
    return fcluster_maxclust(z, max(len(emb) // pool_factor, 1)) - 1


@pytest.mark.parametrize("pool_factor", [2, 3, 4])
def test_clusters_equal_colpali_engine(golden, colqwen, pool_factor: int) -> None:
    for name, emb in colqwen.items():
        np.testing.assert_array_equal(
            _labels(emb, pool_factor), golden[f"{name}.pf{pool_factor}.labels"], err_msg=name
        )


@pytest.mark.parametrize("pool_factor", [2, 3, 4])
def test_synthetic_page_with_ties_equals_colpali_engine(golden, pool_factor: int) -> None:
    page = golden["synthetic_page.int8"].astype(np.float32) / np.float32(127.0)
    assert len(page) == 743 and (page[700:720] == page[100]).all()
    np.testing.assert_array_equal(
        _labels(page, pool_factor), golden[f"synthetic_page.pf{pool_factor}.labels"]
    )


def test_pooled_vectors_equal_colpali_engine(golden, colqwen) -> None:
    for name, emb in colqwen.items():
        want = golden[f"{name}.pf3.pooled"]
        got = hierarchical_pool(emb, 3)
        assert got.shape == want.shape, name
        np.testing.assert_allclose(got, want, atol=1e-5, err_msg=name)


def test_pool_factor_one_and_single_token_keep_vectors(colqwen) -> None:
    emb = colqwen["tiny"]
    np.testing.assert_array_equal(hierarchical_pool(emb, 1), emb)
    np.testing.assert_array_equal(hierarchical_pool(emb[:1], 3), emb[:1])


def _page(rows: int = 3, cols: int = 4, prefix: int = 2, suffix: int = 3) -> Embedding:
    rng = np.random.default_rng(5)
    v = rng.standard_normal((prefix + rows * cols + suffix, 8)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    extras = {"image_grid": [rows, cols], "image_token_span": [prefix, prefix + rows * cols]}
    return Embedding(v, len(v), extras)


def test_rows_cols_equals_ingest_schema() -> None:
    emb = _page()
    out = unpack(pool_embedding(emb, "rows_cols", None))
    np.testing.assert_array_equal(out.vectors, emb.vectors)
    rows, cols = mean_pool_rows_columns(emb.vectors, [3, 4], [2, 14])
    np.testing.assert_array_equal(out.extras["pooled_rows"], unit_rows(rows))
    np.testing.assert_array_equal(out.extras["pooled_columns"], unit_rows(cols))
    assert out.extras["pooled_rows"].shape == (2 + 3 + 3, 8)
    assert out.extras["image_grid"] == [3, 4] and "pooled_split" not in out.extras


def test_hierarchical_drops_the_token_span() -> None:
    out = pool_embedding(_page(), "hierarchical", 2)
    assert len(out.vectors) <= 17 // 2 and out.extras["pooled_from"] == 17
    assert "image_token_span" not in out.extras and out.n_tokens == 17


def test_bad_inputs_are_400() -> None:
    with pytest.raises(InvalidRequest) as exc:
        pool_embedding(Embedding(np.ones(4, dtype=np.float32), 3), "hierarchical", 2)
    assert exc.value.param == "pooling"
    text = Embedding(np.ones((3, 4), dtype=np.float32), 3)
    with pytest.raises(InvalidRequest) as exc:
        pool_embedding(text, "rows_cols", None)
    assert exc.value.param == "pooling"
