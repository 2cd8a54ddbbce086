"""From fetched bytes to request items: the types the input resolver hands out, a PDF page
budget shared by a request's media, and the decoding of one media item (image or PDF)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

from app.engine.base import EngineInput, ImageInput
from app.errors import InvalidRequest, MediaError
from app.media.images import content_hash, decode_image
from app.media.pdf import render_pdf
from app.media.sniff import IMAGE_KINDS, SUPPORTED_TEXT, describe_unknown, sniff
from app.settings import Settings


@dataclass(frozen=True)
class ResolvedItem:
    input_index: int  # index in the request's `input` list
    page: int | None  # 1-based PDF page, None otherwise
    item: EngineInput  # TextInput | TokenInput | ImageInput
    param: str  # e.g. "input[3]" or "input[3].file" - used in error messages


@dataclass(frozen=True)
class MediaJob:
    """A media item waiting to be fetched/decoded (found while parsing the request)."""

    input_index: int
    param: str
    source: str  # data URI or URL
    pages: object  # the part's "pages" value (None: all pages)
    pages_param: str
    from_plain_string: bool


def decode_media(
    job: MediaJob,
    data: bytes,
    origin: str,
    budget: ItemBudget,
    settings: Settings,
    target_pixels: int | None,
) -> list[ResolvedItem]:
    """Bytes -> validated RGB items (CPU-bound: run it in a worker thread). A PDF renders to
    about ``target_pixels`` per page unless ``--pdf-dpi`` is set."""
    kind = sniff(data)
    if kind is None:
        raise MediaError(
            f"{job.param}: not a supported image or PDF ({SUPPORTED_TEXT}); "
            f"{describe_unknown(data)}",
            job.param,
        )
    meta_base: dict[str, Any] = {"source": origin, "format": kind}
    if kind in IMAGE_KINDS:
        if job.pages is not None:
            raise InvalidRequest(
                f'{job.pages_param}: "pages" applies only to PDFs; this file is a '
                f"{kind.upper()} image",
                job.pages_param,
            )
        budget.take(1, job.param)
        image = decode_image(data, kind, max_pixels=settings.max_image_pixels, param=job.param)
        return [_image_item(job, image, None, meta_base, source=data)]
    rendered = render_pdf(
        data,
        pages=job.pages,
        max_pages=settings.max_pdf_pages,
        dpi=settings.pdf_dpi,
        target_pixels=target_pixels,
        max_pixels=settings.max_image_pixels,
        param=job.param,
        pages_param=job.pages_param,
        on_count=lambda n: budget.take(n, job.param),
    )
    return [
        _image_item(
            job,
            page.image,
            page.number,
            {**meta_base, "page": page.number, "pages": page.page_count, "dpi": page.dpi},
        )
        for page in rendered
    ]


def _image_item(
    job: MediaJob, image, page: int | None, meta: dict, source: bytes | None = None
) -> ResolvedItem:
    meta = {"width": image.width, "height": image.height, **meta}
    item = ImageInput(image=image, content_hash=content_hash(image), meta=meta, source=source)
    return ResolvedItem(job.input_index, page, item, job.param)


class ItemBudget:
    """Counts items across a request so PDFs cannot expand it past ``--max-inputs``."""

    def __init__(self, limit: int, used: int) -> None:
        self.limit = limit
        self.used = used
        self._lock = threading.Lock()  # taken from worker threads

    def take(self, n: int, param: str) -> None:
        with self._lock:
            self.used += n
            over = self.used > self.limit
        if over:
            raise InvalidRequest(
                f"{param}: the request expands to more than {self.limit} items (PDF pages count "
                "one each), more than the server's limit (--max-inputs); split the request",
                param,
            )


async def all_or_first_error(
    coros: list[Awaitable[list[ResolvedItem]]],
) -> list[list[ResolvedItem]]:
    """Run all; on the first failure cancel the rest and raise the earliest item's error."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    failed = [t for t in tasks if t in done and not t.cancelled() and t.exception() is not None]
    if failed:
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        exc = failed[0].exception()
        assert exc is not None
        raise exc
    return [t.result() for t in tasks]
