"""Find the files to ingest and plan their pages (content hash, page numbers, point ids)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from app.ingest.ids import point_id

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
PDF_SUFFIXES = frozenset({".pdf"})
SUPPORTED_SUFFIXES = IMAGE_SUFFIXES | PDF_SUFFIXES

Kind = Literal["image", "pdf"]


class UnsupportedFile(ValueError):
    """A file named on the command line that is neither an image nor a PDF."""


def file_kind(path: Path) -> Kind | None:
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return "image"
    if suffix in PDF_SUFFIXES:
        return "pdf"
    return None


def walk(paths: Iterable[str | Path]) -> list[Path]:
    """Supported files under ``paths``, each once, in a stable order.

    A folder is walked recursively in sorted order, skipping hidden entries and files of other
    types; a file named directly must be an image or a PDF (UnsupportedFile otherwise); a
    missing path raises FileNotFoundError.
    """
    seen: set[Path] = set()
    out: list[Path] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            found: Iterable[Path] = _walk_dir(path)
        elif path.is_file():
            if file_kind(path) is None:
                raise UnsupportedFile(
                    f"{path}: not an image or a PDF (supported: "
                    f"{', '.join(sorted(SUPPORTED_SUFFIXES))})"
                )
            found = [path]
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
        for f in found:
            key = f.resolve()
            if key not in seen:
                seen.add(key)
                out.append(f)
    return out


def _walk_dir(folder: Path) -> Iterator[Path]:
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            yield from _walk_dir(entry)
        elif entry.is_file() and file_kind(entry) is not None:
            yield entry


@dataclass(frozen=True)
class PageRef:
    """One page to embed: page 1 of an image file, or page ``page`` (1-based) of a PDF."""

    path: Path
    kind: Kind
    sha256: str
    page: int
    page_count: int
    point_id: str
    # pixel size of the image sent (images); None for PDF pages, which the server renders
    width: int | None = None
    height: int | None = None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def plan_pages(files: Iterable[Path], model: str) -> list[PageRef]:
    """Every page of ``files`` with its content-derived point id (reads and hashes each file).

    Raises ValueError for a file that cannot be read as an image / a PDF."""
    pages: list[PageRef] = []
    for path in files:
        kind = file_kind(path)
        if kind is None:
            raise UnsupportedFile(f"{path}: not an image or a PDF")
        digest = sha256_file(path)
        if kind == "image":
            width, height = image_size(path)
            pages.append(
                PageRef(path, kind, digest, 1, 1, point_id(digest, 1, model), width, height)
            )
        else:
            count = pdf_page_count(path)
            pages.extend(
                PageRef(path, kind, digest, n, count, point_id(digest, n, model))
                for n in range(1, count + 1)
            )
    return pages


def image_size(path: Path) -> tuple[int, int]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return int(img.width), int(img.height)
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"{path}: cannot read this image ({exc})") from None


def pdf_page_count(path: Path) -> int:
    import pypdfium2 as pdfium

    try:
        doc = pdfium.PdfDocument(str(path))
    except pdfium.PdfiumError as exc:
        raise ValueError(f"{path}: cannot read this PDF ({exc})") from None
    try:
        return len(doc)
    finally:
        doc.close()
