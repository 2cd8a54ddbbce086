"""Decide what a media byte string is from its magic bytes, never from a declared type."""

from __future__ import annotations

from typing import Literal

MediaKind = Literal["png", "jpeg", "gif", "webp", "bmp", "tiff", "pdf"]

IMAGE_KINDS: frozenset[str] = frozenset({"png", "jpeg", "gif", "webp", "bmp", "tiff"})

# Pillow's format names for each image kind (Image.open(formats=...) only tries these).
PIL_FORMATS: dict[str, str] = {
    "png": "PNG",
    "jpeg": "JPEG",
    "gif": "GIF",
    "webp": "WEBP",
    "bmp": "BMP",
    "tiff": "TIFF",
}

SUPPORTED_TEXT = "PNG, JPEG, WebP, GIF, BMP, TIFF or PDF"


def sniff(data: bytes) -> MediaKind | None:
    """The media kind of ``data`` from its first bytes, or None when it is none we read."""
    head = data[:16]
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "webp"
    if head.startswith(b"BM") and len(data) >= 26:
        return "bmp"
    if head.startswith((b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")):
        return "tiff"
    # PDF readers accept up to 1 KiB of junk before the header.
    if b"%PDF-" in data[:1024]:
        return "pdf"
    return None


def describe_unknown(data: bytes) -> str:
    """A hint about what an unsupported byte string looks like, for error messages."""
    if not data:
        return "the file is empty"
    text = data[:512].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) or b"<html" in text:
        return "it looks like an HTML page (is the URL a web page rather than the file itself?)"
    if text.startswith(b"<?xml") or text.startswith(b"<svg"):
        return "it looks like XML/SVG, which is not supported (convert it to PNG)"
    if text.startswith((b"{", b"[")):
        return "it looks like JSON, not an image"
    if data[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1", b"ftypavif", b"ftypavis"):
        return "HEIC/AVIF is not supported (convert it to PNG or JPEG)"
    return f"unrecognised leading bytes {data[:8].hex(' ')}"
