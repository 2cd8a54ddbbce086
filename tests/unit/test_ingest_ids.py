"""Content-derived point ids (app.ingest.ids)."""

from __future__ import annotations

import hashlib
import uuid

import pytest

from app.ingest.ids import ID_NAMESPACE, point_id

SHA = hashlib.sha256(b"page bytes").hexdigest()


def test_ids_are_uuid5_and_stable() -> None:
    pid = point_id(SHA, 1, "m")
    parsed = uuid.UUID(pid)
    assert parsed.version == 5
    assert pid == point_id(SHA, 1, "m") == point_id(SHA.upper(), 1, "m")
    assert pid == str(uuid.uuid5(ID_NAMESPACE, f"{SHA}:1:m"))


def test_ids_differ_by_content_page_and_model() -> None:
    other = hashlib.sha256(b"other bytes").hexdigest()
    ids = {point_id(SHA, 1, "m"), point_id(SHA, 2, "m"), point_id(SHA, 1, "n")}
    ids.add(point_id(other, 1, "m"))
    assert len(ids) == 4


def test_pages_start_at_one() -> None:
    with pytest.raises(ValueError):
        point_id(SHA, 0, "m")
