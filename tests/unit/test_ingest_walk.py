"""Walking files and planning pages (app.ingest.walk)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from PIL import Image

from app.ingest.ids import point_id
from app.ingest.walk import UnsupportedFile, plan_pages, walk


def _png(path: Path, size: tuple[int, int] = (40, 30), color: str = "red") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def _pdf(path: Path, pages: int) -> Path:
    images = [Image.new("RGB", (200, 260), c) for c in ("white", "blue", "green")[:pages]]
    images[0].save(path, "PDF", save_all=True, append_images=images[1:])
    return path


def test_walk_recurses_sorted_skips_hidden_and_other_types(tmp_path: Path) -> None:
    _png(tmp_path / "b.png")
    _png(tmp_path / "a" / "z.JPG")
    _png(tmp_path / "a" / "y.webp")
    _pdf(tmp_path / "c.pdf", 1)
    (tmp_path / "notes.txt").write_text("x")
    _png(tmp_path / ".hidden" / "h.png")
    _png(tmp_path / ".h.png")
    found = [p.relative_to(tmp_path).as_posix() for p in walk([tmp_path])]
    assert found == ["a/y.webp", "a/z.JPG", "b.png", "c.pdf"]


def test_walk_keeps_argument_order_and_deduplicates(tmp_path: Path) -> None:
    b, a = _png(tmp_path / "b.png"), _png(tmp_path / "a.png")
    assert walk([b, tmp_path, a]) == [b, a]


def test_walk_errors(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(UnsupportedFile, match="notes.txt"):
        walk([tmp_path / "notes.txt"])
    with pytest.raises(FileNotFoundError, match="missing"):
        walk([tmp_path / "missing"])


def test_plan_pages_images_and_pdfs(tmp_path: Path) -> None:
    img = _png(tmp_path / "a.png", (40, 30))
    pdf = _pdf(tmp_path / "b.pdf", 3)
    pages = plan_pages([img, pdf], "model-x")
    assert [(p.path.name, p.page, p.page_count, p.kind) for p in pages] == [
        ("a.png", 1, 1, "image"),
        ("b.pdf", 1, 3, "pdf"),
        ("b.pdf", 2, 3, "pdf"),
        ("b.pdf", 3, 3, "pdf"),
    ]
    assert (pages[0].width, pages[0].height) == (40, 30)
    assert pages[1].width is None
    sha = hashlib.sha256(pdf.read_bytes()).hexdigest()
    assert pages[2].sha256 == sha
    assert pages[2].point_id == point_id(sha, 2, "model-x")
    assert len({p.point_id for p in pages}) == 4


def test_same_bytes_same_ids_wherever_they_are(tmp_path: Path) -> None:
    a = _png(tmp_path / "one" / "a.png")
    b = tmp_path / "two" / "copy.png"
    b.parent.mkdir()
    b.write_bytes(a.read_bytes())
    pa, pb = plan_pages([a, b], "m")
    assert pa.point_id == pb.point_id


def test_plan_pages_rejects_broken_files(tmp_path: Path) -> None:
    (tmp_path / "bad.png").write_bytes(b"not a png")
    (tmp_path / "bad.pdf").write_bytes(b"not a pdf")
    with pytest.raises(ValueError, match="bad.png"):
        plan_pages([tmp_path / "bad.png"], "m")
    with pytest.raises(ValueError, match="bad.pdf"):
        plan_pages([tmp_path / "bad.pdf"], "m")
