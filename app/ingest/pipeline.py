"""Submit pages as embedding jobs in chunks and upsert them into Qdrant. The server pools each
page (``"pooling": {"method": "rows_cols"}``): the client only stores what it gets."""

from __future__ import annotations

import base64
import mimetypes
import re
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from qdrant_client import QdrantClient, models

from app.ingest.client import EmbeddingItem, EmbeddingsClient, JobStatus, ServerError
from app.ingest.collection import (
    MEAN_COLUMNS,
    MEAN_ROWS,
    ORIGINAL,
    check_model,
    ensure_collection,
    existing_ids,
)
from app.ingest.walk import PageRef

ROWS_COLS = {"method": "rows_cols"}

# Qwen2.5-VL: one merged image token covers 28 x 28 pixels (14 px patches, 2 x 2 merge).
MERGED_PATCH_PX = 28


@dataclass
class IngestReport:
    files: int = 0
    pages: int = 0
    skipped: int = 0  # already stored
    ingested: int = 0
    jobs: int = 0
    seconds: float = 0.0
    ids: list[str] = field(default_factory=list)

    @property
    def pages_per_second(self) -> float:
        return self.ingested / self.seconds if self.seconds > 0 else 0.0


@dataclass
class _Chunk:
    pages: list[PageRef]
    inputs: list[Any]
    # per input, the pages it expands to (in order)
    expands: list[list[PageRef]]


# ---- building requests ---------------------------------------------------------------------


def data_uri(path: Path, mime: str | None = None) -> str:
    mime = mime or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def page_spec(numbers: Sequence[int]) -> str:
    """ "1-3,7" for [1, 2, 3, 7]."""
    parts: list[str] = []
    start = prev = numbers[0]
    for n in [*numbers[1:], None]:
        if n is not None and n == prev + 1:
            prev = n
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if n is not None:
            start = prev = n
    return ",".join(parts)


def build_chunk(pages: list[PageRef]) -> _Chunk:
    """Request inputs for ``pages``: one image part per image; one file part per run of pages
    of the same PDF (``"pages"`` selects them, so a resumed PDF sends only what is missing)."""
    inputs: list[Any] = []
    expands: list[list[PageRef]] = []
    pdf_uris: dict[Path, str] = {}
    i = 0
    while i < len(pages):
        page = pages[i]
        if page.kind == "image":
            inputs.append({"type": "image_url", "image_url": {"url": data_uri(page.path)}})
            expands.append([page])
            i += 1
            continue
        run = [page]
        while i + len(run) < len(pages) and pages[i + len(run)].path == page.path:
            run.append(pages[i + len(run)])
        uri = pdf_uris.get(page.path) or data_uri(page.path, "application/pdf")
        pdf_uris[page.path] = uri
        inputs.append(
            {
                "type": "file",
                "file": {"file_data": uri, "filename": page.path.name},
                "pages": page_spec([p.page for p in run]),
            }
        )
        expands.append(run)
        i += len(run)
    return _Chunk(pages, inputs, expands)


def match_items(chunk: _Chunk, items: list[EmbeddingItem]) -> list[tuple[PageRef, EmbeddingItem]]:
    """Pair each page of ``chunk`` with its response item (request order, checked)."""
    expected = [(i, p) for i, run in enumerate(chunk.expands) for p in run]
    if len(items) != len(expected):
        raise ServerError(f"the job returned {len(items)} embeddings for {len(expected)} pages")
    out = []
    for (input_index, page), item in zip(expected, items, strict=True):
        if item.page is not None and (item.page != page.page or item.input_index != input_index):
            raise ServerError(
                f"the job returned input {item.input_index} page {item.page} where "
                f"input {input_index} page {page.page} ({page.path}) was expected"
            )
        out.append((page, item))
    return out


def name_the_file(exc: ServerError, chunk: _Chunk) -> ServerError:
    """The same error, naming the file behind the ``input[i]`` its message points at."""
    m = re.search(r"input\[(\d+)\]", str(exc))
    if m and int(m.group(1)) < len(chunk.expands):
        path = chunk.expands[int(m.group(1))][0].path
        return type(exc)(f"{exc} (file: {path})", exc.status)
    return exc


# ---- points --------------------------------------------------------------------------------


def page_size(page: PageRef, item: EmbeddingItem) -> tuple[int | None, int | None]:
    """Pixel size of the page image sent: the file's for images; for PDF pages (rendered by
    the server) the size the server reports, else the model's input size (grid x 28 px)."""
    if page.width is not None:
        return page.width, page.height
    size = item.extra.get("source_size") or item.extra.get("image_size")
    if isinstance(size, list | tuple) and len(size) == 2:
        return int(size[0]), int(size[1])
    if "width" in item.extra and "height" in item.extra:
        return int(item.extra["width"]), int(item.extra["height"])
    if item.image_grid is not None:
        rows, cols = item.image_grid
        return cols * MERGED_PATCH_PX, rows * MERGED_PATCH_PX
    return None, None


def to_point(page: PageRef, item: EmbeddingItem, model: str) -> models.PointStruct:
    if item.image_grid is None or item.image_token_span is None:
        raise ServerError(
            f"{page.path} page {page.page}: the server sent no image_grid / image_token_span; "
            "is it serving a ColQwen model?"
        )
    vectors = item.vectors
    rows, cols = item.extra.get("pooled_rows"), item.extra.get("pooled_columns")
    if rows is None or cols is None:
        raise ServerError(
            f"{page.path} page {page.page}: the server sent no pooled_rows / pooled_columns "
            "(server-side rows_cols pooling); update the server"
        )
    width, height = page_size(page, item)
    payload = {
        "source": str(page.path.resolve()),
        "filename": page.path.name,
        "page": page.page,
        "pages": page.page_count,
        "width": width,
        "height": height,
        "kind": page.kind,
        "sha256": page.sha256,
        "model": model,
        "image_grid": list(item.image_grid),
        "image_token_span": list(item.image_token_span),
    }
    return models.PointStruct(
        id=page.point_id,
        vector={
            ORIGINAL: _rows(vectors),
            MEAN_ROWS: _rows(rows),  # unit length from the server
            MEAN_COLUMNS: _rows(cols),
        },
        payload=payload,
    )


def _rows(a: np.ndarray) -> list[list[float]]:
    return np.asarray(a, dtype=np.float32).tolist()


# ---- the loop ------------------------------------------------------------------------------


def chunks_of(pages: list[PageRef], size: int) -> Iterator[list[PageRef]]:
    for i in range(0, len(pages), size):
        yield pages[i : i + size]


def ingest_pages(
    pages: list[PageRef],
    *,
    client: EmbeddingsClient,
    qdrant: QdrantClient,
    collection: str,
    model: str,
    chunk_size: int = 16,
    max_jobs: int = 2,
    poll: float = 0.2,
    progress: bool = True,
    binary_quantization: bool = False,
    pool_factor: int | None = None,
) -> IngestReport:
    """Embed and store every page of ``pages`` not yet in ``collection``.

    Up to ``max_jobs`` jobs of ``chunk_size`` pages are in flight, so the server embeds the
    next chunk while this process upserts the last one. Interrupted (Ctrl-C, error), it
    cancels its jobs; what was upserted stays, and the next run resumes from there.
    """
    from tqdm import tqdm

    started = time.perf_counter()
    report = IngestReport(files=len({p.path for p in pages}), pages=len(pages))
    if qdrant.collection_exists(collection):
        check_model(qdrant, collection, model)
    stored = existing_ids(qdrant, collection, [p.point_id for p in pages])
    todo = [p for p in pages if p.point_id not in stored]
    report.skipped = len(pages) - len(todo)
    pending = deque(chunks_of(todo, max(1, chunk_size)))
    inflight: deque[tuple[JobStatus, _Chunk]] = deque()
    done = 0
    checked = False  # the collection is created / checked against the first result's dim
    bar = tqdm(total=len(todo), unit="page", disable=not progress or not todo, desc="embedding")
    try:
        while pending or inflight:
            while pending and len(inflight) < max(1, max_jobs):
                chunk = build_chunk(pending.popleft())
                try:
                    pooling = (
                        {**ROWS_COLS, "pool_factor": pool_factor} if pool_factor else ROWS_COLS
                    )
                    job = client.submit_job(chunk.inputs, model, pooling=pooling)
                except ServerError as exc:
                    raise name_the_file(exc, chunk) from None
                inflight.append((job, chunk))
                report.jobs += 1
            statuses = [client.job(job.id) for job, _ in inflight]
            bar.n = min(len(todo), done + sum(s.completed for s in statuses))
            bar.refresh()
            chunk = inflight[0][1]
            if not statuses[0].done:
                time.sleep(poll)
                continue
            inflight.popleft()
            try:
                pairs = match_items(chunk, client.finish(statuses[0]))
            except ServerError as exc:
                raise name_the_file(exc, chunk) from None
            if not checked:
                dim = pairs[0][1].vectors.shape[1]
                ensure_collection(qdrant, collection, dim, model, binary=binary_quantization)
                checked = True
            points = [to_point(page, item, model) for page, item in pairs]
            qdrant.upsert(collection, points=points, wait=True)
            done += len(points)
            report.ingested += len(points)
            report.ids.extend(page.point_id for page, _ in pairs)
            bar.n = done
            bar.refresh()
    except BaseException:
        for job, _ in inflight:
            client.cancel_job(job.id)
        raise
    finally:
        bar.close()
        report.seconds = time.perf_counter() - started
    return report
