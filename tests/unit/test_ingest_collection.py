"""The Qdrant collection schema (app.ingest.collection), on an embedded local Qdrant."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from qdrant_client import QdrantClient, models

from app.ingest.collection import (
    MEAN_COLUMNS,
    MEAN_ROWS,
    ORIGINAL,
    CollectionMismatch,
    ensure_collection,
    existing_ids,
    open_qdrant,
    vectors_config,
)
from app.ingest.ids import point_id


@pytest.fixture
def qdrant(tmp_path: Path) -> Iterator[QdrantClient]:
    client = open_qdrant(None, tmp_path / "qdrant")
    yield client
    client.close()


def test_schema_follows_the_colpali_recipe() -> None:
    cfg = vectors_config(128)
    assert set(cfg) == {ORIGINAL, MEAN_ROWS, MEAN_COLUMNS}
    for params in cfg.values():
        assert params.size == 128
        assert params.distance == models.Distance.COSINE
        assert params.multivector_config is not None
        assert params.multivector_config.comparator == models.MultiVectorComparator.MAX_SIM
    assert cfg[ORIGINAL].hnsw_config is not None and cfg[ORIGINAL].hnsw_config.m == 0
    assert cfg[MEAN_ROWS].hnsw_config is None and cfg[MEAN_COLUMNS].hnsw_config is None


def test_ensure_collection_creates_then_accepts_the_same(qdrant: QdrantClient) -> None:
    ensure_collection(qdrant, "pages", 16, "m")
    vectors = qdrant.get_collection("pages").config.params.vectors
    assert isinstance(vectors, dict) and set(vectors) == {ORIGINAL, MEAN_ROWS, MEAN_COLUMNS}
    assert vectors[ORIGINAL].multivector_config is not None
    ensure_collection(qdrant, "pages", 16, "m")  # idempotent


def test_ensure_collection_refuses_another_dim_schema_or_model(qdrant: QdrantClient) -> None:
    ensure_collection(qdrant, "pages", 16, "m")
    with pytest.raises(CollectionMismatch, match="16-d"):
        ensure_collection(qdrant, "pages", 32, "m")

    one = [[1.0] + [0.0] * 15]
    qdrant.upsert(
        "pages",
        [
            models.PointStruct(
                id=point_id("ab", 1, "m"),
                vector={n: one for n in (ORIGINAL, MEAN_ROWS, MEAN_COLUMNS)},
                payload={"model": "m"},
            )
        ],
    )
    with pytest.raises(CollectionMismatch, match="embedded by 'm'"):
        ensure_collection(qdrant, "pages", 16, "other-model")

    qdrant.create_collection(
        "plain", vectors_config=models.VectorParams(size=16, distance=models.Distance.COSINE)
    )
    with pytest.raises(CollectionMismatch, match="named vectors"):
        ensure_collection(qdrant, "plain", 16, "m")


def test_existing_ids(qdrant: QdrantClient) -> None:
    ids = [point_id("ab", n, "m") for n in (1, 2, 3)]
    assert existing_ids(qdrant, "missing", ids) == set()
    ensure_collection(qdrant, "pages", 4, "m")
    one = [[1.0, 0.0, 0.0, 0.0]]
    qdrant.upsert(
        "pages",
        [
            models.PointStruct(
                id=ids[1], vector={n: one for n in (ORIGINAL, MEAN_ROWS, MEAN_COLUMNS)}
            )
        ],
    )
    assert existing_ids(qdrant, "pages", ids, batch=2) == {ids[1]}
