"""The Qdrant collection schema for ColQwen page embeddings, and opening a Qdrant target.

Three named multivectors per page (Qdrant's ColPali / ColQwen "PDF retrieval at scale" recipe):

* ``original``: every token vector of the page; compared with MaxSim (cosine) and kept out of
  the HNSW graph (``m=0``) - only used to rerank candidates, never searched by graph.
* ``mean_pooling_rows`` / ``mean_pooling_columns``: the image grid mean-pooled per row / per
  column (``app.ingest.pooling``), about 30x fewer vectors, indexed with HNSW for the fast
  first stage.
"""

from __future__ import annotations

from pathlib import Path

from qdrant_client import QdrantClient, models

ORIGINAL = "original"
MEAN_ROWS = "mean_pooling_rows"
MEAN_COLUMNS = "mean_pooling_columns"
VECTOR_NAMES = (ORIGINAL, MEAN_ROWS, MEAN_COLUMNS)


class CollectionMismatch(RuntimeError):
    """The collection exists with another schema, dimension or model."""


def default_qdrant_path() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("mlx-embeddings-server")) / "qdrant"


def open_qdrant(url: str | None, path: str | Path | None, api_key: str | None = None):
    """A QdrantClient for a server at ``url``, else the embedded local-mode store at ``path``
    (default: ``default_qdrant_path()``; no Docker needed)."""
    if url:
        return QdrantClient(url=url, api_key=api_key, timeout=120)
    where = Path(path) if path else default_qdrant_path()
    where.mkdir(parents=True, exist_ok=True)
    try:
        return QdrantClient(path=str(where))
    except RuntimeError as exc:  # portalocker: another process holds the embedded store
        raise RuntimeError(
            f"the embedded Qdrant at {where} is in use by another process ({exc}); stop it, "
            "use another --qdrant-path, or run a Qdrant server (--qdrant-url)"
        ) from None


def vectors_config(dim: int, binary: bool = False) -> dict[str, models.VectorParams]:
    """``binary``: Qdrant keeps a 1-bit copy of the originals in RAM (binary quantization) and
    rescores the candidates with the full vectors (``search`` asks for it)."""
    multi = models.MultiVectorConfig(comparator=models.MultiVectorComparator.MAX_SIM)
    quantization = (
        models.BinaryQuantization(binary=models.BinaryQuantizationConfig(always_ram=True))
        if binary
        else None
    )
    return {
        ORIGINAL: models.VectorParams(
            size=dim,
            distance=models.Distance.COSINE,
            multivector_config=multi,
            hnsw_config=models.HnswConfigDiff(m=0),  # rerank only: no graph
            quantization_config=quantization,
        ),
        MEAN_ROWS: models.VectorParams(
            size=dim, distance=models.Distance.COSINE, multivector_config=multi
        ),
        MEAN_COLUMNS: models.VectorParams(
            size=dim, distance=models.Distance.COSINE, multivector_config=multi
        ),
    }


def collection_dim(client: QdrantClient, name: str) -> int | None:
    """The vector size of an existing collection made by us; None when it does not exist."""
    if not client.collection_exists(name):
        return None
    info = client.get_collection(name)
    vectors = info.config.params.vectors
    if not isinstance(vectors, dict) or set(VECTOR_NAMES) - set(vectors):
        have = sorted(vectors) if isinstance(vectors, dict) else "one unnamed vector"
        raise CollectionMismatch(
            f"collection {name!r} exists but does not have the named vectors "
            f"{list(VECTOR_NAMES)} (it has {have}); choose another --collection"
        )
    for vname in VECTOR_NAMES:
        params = vectors[vname]
        if params.multivector_config is None:
            raise CollectionMismatch(
                f"collection {name!r}: vector {vname!r} is not a multivector; "
                "choose another --collection"
            )
    return int(vectors[ORIGINAL].size)


def ensure_collection(
    client: QdrantClient, name: str, dim: int, model: str, *, binary: bool = False
) -> None:
    """Create the collection, or check that the existing one fits ``dim`` and ``model``."""
    have = collection_dim(client, name)
    if have is None:
        client.create_collection(name, vectors_config=vectors_config(dim, binary))
        return
    if have != dim:
        raise CollectionMismatch(
            f"collection {name!r} holds {have}-d vectors but the model gives {dim}-d ones; "
            "choose another --collection"
        )
    check_model(client, name, model)


def check_model(client: QdrantClient, name: str, model: str) -> None:
    """Refuse to mix models in one collection (their vectors are not comparable)."""
    points, _ = client.scroll(name, limit=1, with_payload=["model"], with_vectors=False)
    if points and points[0].payload and points[0].payload.get("model") not in (None, model):
        raise CollectionMismatch(
            f"collection {name!r} holds pages embedded by {points[0].payload['model']!r}, not "
            f"{model!r}; choose another --collection (vectors of two models do not compare)"
        )


def existing_ids(client: QdrantClient, name: str, ids: list[str], batch: int = 256) -> set[str]:
    """The subset of ``ids`` already stored in ``name`` (empty when it does not exist)."""
    if not ids or not client.collection_exists(name):
        return set()
    found: set[str] = set()
    for i in range(0, len(ids), batch):
        records = client.retrieve(
            name, ids=ids[i : i + batch], with_payload=False, with_vectors=False
        )
        found.update(str(r.id) for r in records)
    return found
