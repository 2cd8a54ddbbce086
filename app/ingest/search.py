"""Two-stage page search: prefetch candidates on the mean-pooled vectors, rerank on the
original token vectors with exact MaxSim."""

from __future__ import annotations

import numpy as np
from qdrant_client import QdrantClient, models

from app.ingest.client import EmbeddingsClient
from app.ingest.collection import MEAN_COLUMNS, MEAN_ROWS, ORIGINAL


def embed_query(client: EmbeddingsClient, text: str, model: str) -> np.ndarray:
    """The (n_tokens, dim) query vectors of ``text``."""
    return client.embed([text], model)[0].vectors


def search(
    qdrant: QdrantClient,
    collection: str,
    query: np.ndarray,
    *,
    top_k: int = 5,
    prefetch: int = 100,
    with_vectors: bool | list[str] = False,
) -> list[models.ScoredPoint]:
    """Top ``top_k`` pages: ``prefetch`` candidates from each pooled vector (rows, columns),
    reranked by MaxSim on ``original``. ``prefetch=0`` searches ``original`` exhaustively (it has
    no HNSW graph, so Qdrant scans it)."""
    q = np.asarray(query, dtype=np.float32).tolist()
    stages = None
    if prefetch > 0:
        stages = [
            models.Prefetch(query=q, using=MEAN_ROWS, limit=prefetch),
            models.Prefetch(query=q, using=MEAN_COLUMNS, limit=prefetch),
        ]
    res = qdrant.query_points(
        collection,
        query=q,
        using=ORIGINAL,
        prefetch=stages,
        limit=top_k,
        with_payload=True,
        with_vectors=with_vectors,
        search_params=_rescore(qdrant, collection),
    )
    return res.points


def _rescore(qdrant: QdrantClient, collection: str) -> models.SearchParams | None:
    """With ``--binary-quantization`` the 1-bit copies pick the candidates and the full
    vectors score them (Qdrant's rescoring); None for a collection without quantization."""
    vectors = qdrant.get_collection(collection).config.params.vectors
    params = vectors.get(ORIGINAL) if isinstance(vectors, dict) else None
    if params is None or params.quantization_config is None:
        return None
    return models.SearchParams(quantization=models.QuantizationSearchParams(rescore=True))
