"""Point ids derived from content: the same page of the same bytes under the same model always
gets the same id, so re-running an ingestion skips what is stored and resumes what is not."""

from __future__ import annotations

import uuid

# A fixed namespace for this project's point ids (uuid5 of its name in the URL namespace).
ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "mlx-embeddings-server/ingest/page")


def point_id(sha256_hex: str, page: int, model: str) -> str:
    """UUID (string) of page ``page`` (1-based; 1 for an image) of a file whose bytes hash to
    ``sha256_hex``, embedded by ``model``."""
    if page < 1:
        raise ValueError(f"page numbers start at 1 (got {page})")
    return str(uuid.uuid5(ID_NAMESPACE, f"{sha256_hex.lower()}:{page}:{model}"))
