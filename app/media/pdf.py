"""PDF page selection and rendering with pypdfium2 (no system dependencies).

PDFium is not thread-safe: every call into it holds ``PDFIUM_LOCK``. Rendering is blocking and
CPU-bound; callers run :func:`render_pdf` in a worker thread (``asyncio.to_thread``).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pypdfium2 as pdfium
from PIL import Image

from app.errors import InvalidRequest, MediaError

PDFIUM_LOCK = threading.Lock()

POINTS_PER_INCH = 72.0
# Without --pdf-dpi and without a model pixel budget, pages render at this DPI.
DEFAULT_PDF_DPI = 144.0
# Fitting the model's pixel budget never renders above this DPI (tiny pages stay sharp enough).
MAX_FIT_DPI = 300.0


@dataclass(frozen=True)
class RenderedPage:
    number: int  # 1-based
    image: Image.Image
    dpi: float
    page_count: int


def parse_pages(spec: object, page_count: int, *, param: str) -> list[int]:
    """1-based page numbers selected by ``spec`` ("1-3,7", "5-", 2 or None for all).

    Order follows the spec; repeated pages are kept once. Raises InvalidRequest.
    """
    if spec is None:
        return list(range(1, page_count + 1))
    if isinstance(spec, bool) or not isinstance(spec, (int, str)):
        raise InvalidRequest(
            f'{param}: pages must be a string like "1-3,7" or a page number, '
            f"not {type(spec).__name__}",
            param,
        )
    if isinstance(spec, int):
        if spec < 1:
            raise InvalidRequest(f"{param}: page numbers start at 1 (got {spec})", param)
        if spec > page_count:
            raise InvalidRequest(
                f"{param}: page {spec} is out of range: the PDF has {page_count} "
                f"page{'s' if page_count != 1 else ''}",
                param,
            )
        return [spec]
    text = spec.replace(" ", "")
    if not text:
        raise InvalidRequest(f'{param}: pages is empty (use e.g. "1-3,7")', param)
    seen: set[int] = set()
    out: list[int] = []
    for token in text.split(","):
        first, dash, last = token.partition("-")
        try:
            start = int(first)
            end = (int(last) if last else page_count) if dash else start
        except ValueError:
            raise InvalidRequest(
                f'{param}: cannot read page range {token!r} (use e.g. "1-3,7" or "5-")', param
            ) from None
        if start < 1 or end < 1:
            raise InvalidRequest(f"{param}: page numbers start at 1 (got {token!r})", param)
        if start > end:
            raise InvalidRequest(f"{param}: page range {token!r} runs backwards", param)
        if end > page_count:
            raise InvalidRequest(
                f"{param}: page {end} is out of range: the PDF has {page_count} "
                f"page{'s' if page_count != 1 else ''}",
                param,
            )
        for n in range(start, end + 1):
            if n not in seen:
                seen.add(n)
                out.append(n)
    return out


def page_scale(
    width_pt: float,
    height_pt: float,
    *,
    dpi: float | None,
    target_pixels: int | None,
    max_pixels: int,
) -> float:
    """Render scale (pixels per point) for a page of ``width_pt`` x ``height_pt`` points.

    ``dpi`` wins when set. Otherwise the page is scaled so that it holds at most (and about)
    ``target_pixels`` (the model's largest image), at most MAX_FIT_DPI; without
    a target, DEFAULT_PDF_DPI. The result never exceeds ``max_pixels``.
    """
    area = max(width_pt, 1.0) * max(height_pt, 1.0)
    if dpi is not None:
        scale = dpi / POINTS_PER_INCH
    elif target_pixels:
        scale = math.sqrt(target_pixels / area)
        scale = min(scale, MAX_FIT_DPI / POINTS_PER_INCH)
        max_pixels = min(max_pixels, max(target_pixels, 1))
    else:
        scale = DEFAULT_PDF_DPI / POINTS_PER_INCH

    # pypdfium2 rounds each side up: keep ceil(w*s) * ceil(h*s) within max_pixels.
    def pixels(s: float) -> int:
        return math.ceil(width_pt * s) * math.ceil(height_pt * s)

    if pixels(scale) > max_pixels:
        scale = min(scale, math.sqrt(max_pixels / area))
        while pixels(scale) > max_pixels and scale > 1e-6:
            # lose about half a pixel on the longer side per step
            scale *= 1.0 - 0.5 / max(width_pt * scale, height_pt * scale, 1.0)
    return scale


def open_pdf(data: bytes, *, param: str) -> pdfium.PdfDocument:
    """Open a PDF (caller holds PDFIUM_LOCK). Raises MediaError for encrypted/corrupt files."""
    try:
        return pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        msg = str(exc)
        if "password" in msg.lower():
            raise MediaError(
                f"{param}: the PDF is password-protected; send a copy without a password",
                param,
            ) from None
        raise MediaError(
            f"{param}: the PDF is corrupt or not a PDF ({msg}); re-export it and try again",
            param,
        ) from None


def render_pdf(
    data: bytes,
    *,
    pages: object,
    max_pages: int,
    dpi: float | None,
    target_pixels: int | None,
    max_pixels: int,
    param: str,
    pages_param: str,
    on_count: Callable[[int], None] | None = None,
) -> list[RenderedPage]:
    """Render the selected pages of ``data`` to RGB images (blocking; run it in a thread).

    ``on_count(n)`` is called with the number of selected pages before any page is rendered
    (lets the caller enforce request-wide limits early).
    """
    with PDFIUM_LOCK:
        doc = open_pdf(data, param=param)
    try:
        with PDFIUM_LOCK:
            page_count = len(doc)
        if page_count == 0:
            raise MediaError(f"{param}: the PDF has no pages", param)
        selected = parse_pages(pages, page_count, param=pages_param)
        if len(selected) > max_pages:
            raise InvalidRequest(
                f"{param}: {len(selected)} PDF pages selected, more than the server's limit of "
                f'{max_pages} (--max-pdf-pages); select fewer with "pages": '
                f'"1-{max_pages}"',
                param,
            )
        if on_count is not None:
            on_count(len(selected))
        return [
            _render_page(doc, n, page_count, dpi, target_pixels, max_pixels, param)
            for n in selected
        ]
    finally:
        with PDFIUM_LOCK:
            doc.close()


def _render_page(
    doc: pdfium.PdfDocument,
    number: int,
    page_count: int,
    dpi: float | None,
    target_pixels: int | None,
    max_pixels: int,
    param: str,
) -> RenderedPage:
    with PDFIUM_LOCK:
        try:
            page = doc[number - 1]
        except pdfium.PdfiumError as exc:
            raise MediaError(f"{param}: PDF page {number} cannot be read ({exc})", param) from None
        try:
            width, height = page.get_size()
            scale = page_scale(
                width, height, dpi=dpi, target_pixels=target_pixels, max_pixels=max_pixels
            )
            bitmap = render_page_bitmap(page, scale)
            try:
                image = bitmap.to_pil().convert("RGB")
            finally:
                bitmap.close()
        except (pdfium.PdfiumError, ValueError) as exc:
            raise MediaError(
                f"{param}: PDF page {number} cannot be rendered ({exc})", param
            ) from None
        finally:
            page.close()
    return RenderedPage(number, image, scale * POINTS_PER_INCH, page_count)


def render_page_bitmap(page: pdfium.PdfPage, scale: float) -> pdfium.PdfBitmap:
    """The one place that sets render options (tests reproduce a page through it)."""
    return page.render(
        scale=scale,
        fill_color=(255, 255, 255, 255),
        draw_annots=True,
        may_draw_forms=True,
    )


def page_sizes(data: bytes, *, param: str = "input") -> Sequence[tuple[float, float]]:
    """Each page's (width, height) in points (a helper for tests and diagnostics)."""
    with PDFIUM_LOCK:
        doc = open_pdf(data, param=param)
        try:
            sizes = []
            for i in range(len(doc)):
                page = doc[i]
                sizes.append(tuple(page.get_size()))
                page.close()
            return sizes
        finally:
            doc.close()
