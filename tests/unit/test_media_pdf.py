"""PDF page selection, render scale, rendering, caps and PDF errors."""

from __future__ import annotations

import asyncio
import base64
import io
import math
import sys
from pathlib import Path

import pypdfium2 as pdfium
import pytest

from app.errors import InvalidRequest, MediaError
from app.inputs import InputResolver
from app.media.pdf import (
    DEFAULT_PDF_DPI,
    MAX_FIT_DPI,
    page_scale,
    page_sizes,
    parse_pages,
    render_pdf,
)
from app.settings import Settings

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.media_server import encrypted_pdf, make_pdf  # noqa: E402

PDF = make_pdf()  # pages of 200x300, 300x200 and 250x250 points


def data_uri(data: bytes, mime: str = "application/pdf") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def resolve(raw: object, *, model_pixels: int | None = None, **settings):
    async def go():
        resolver = InputResolver(
            Settings(model="test", **settings), max_image_pixels_for_model=model_pixels
        )
        try:
            return await resolver.resolve(raw)
        finally:
            await resolver.aclose()

    return asyncio.run(go())


def file_part(data: bytes, **extra) -> dict:
    return {"type": "file", "file": {"file_data": data_uri(data), "filename": "doc.pdf"}, **extra}


# ---------------------------------------------------------------------------- pages spec


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (None, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]),
        ("1-3,7", [1, 2, 3, 7]),
        (" 2 , 4 - 5 ", [2, 4, 5]),
        ("8-", [8, 9, 10]),
        ("3,1,3,2-3", [3, 1, 2]),  # request order, repeats dropped
        (4, [4]),
        ("10", [10]),
    ],
)
def test_parse_pages(spec: object, expected: list[int]) -> None:
    assert parse_pages(spec, 10, param="input[0].pages") == expected


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("11", "page 11 is out of range: the PDF has 10 pages"),
        ("2-12", "page 12 is out of range"),
        ("0", "page numbers start at 1"),
        ("5-2", "runs backwards"),
        ("a-b", "cannot read page range 'a-b'"),
        ("1,,2", "cannot read page range ''"),
        ("", "pages is empty"),
        (True, "must be a string"),
        ([1, 2], "must be a string"),
        (-1, "page numbers start at 1"),
    ],
)
def test_parse_pages_errors(spec: object, fragment: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        parse_pages(spec, 10, param="input[4].pages")
    assert err.value.status == 400
    assert err.value.param == "input[4].pages"
    assert err.value.message.startswith("input[4].pages: ")
    assert fragment in err.value.message


# ---------------------------------------------------------------------------- scale


def test_page_scale_modes() -> None:
    letter = (612.0, 792.0)
    assert page_scale(*letter, dpi=100, target_pixels=None, max_pixels=10**9) == 100 / 72
    assert page_scale(*letter, dpi=None, target_pixels=None, max_pixels=10**9) == (
        DEFAULT_PDF_DPI / 72
    )
    # fit the model: about (and at most) the target pixel count
    s = page_scale(*letter, dpi=None, target_pixels=1_000_000, max_pixels=10**9)
    pixels = math.ceil(612 * s) * math.ceil(792 * s)
    assert 0.99 * 1_000_000 <= pixels <= 1_000_000
    # a tiny page is not blown up beyond MAX_FIT_DPI
    assert page_scale(10, 10, dpi=None, target_pixels=10**7, max_pixels=10**9) == MAX_FIT_DPI / 72
    # the server's pixel cap always wins, even over an explicit DPI
    s = page_scale(*letter, dpi=600, target_pixels=None, max_pixels=500_000)
    assert math.ceil(612 * s) * math.ceil(792 * s) <= 500_000


# ---------------------------------------------------------------------------- rendering


def test_render_selected_pages_at_dpi() -> None:
    pages = render_pdf(
        PDF,
        pages="3,1",
        max_pages=10,
        dpi=144,
        target_pixels=None,
        max_pixels=10**8,
        param="p",
        pages_param="p.pages",
    )
    assert [p.number for p in pages] == [3, 1]
    assert pages[0].image.size == (500, 500) and pages[1].image.size == (400, 600)
    assert all(p.image.mode == "RGB" and p.page_count == 3 for p in pages)
    assert page_sizes(PDF) == [(200.0, 300.0), (300.0, 200.0), (250.0, 250.0)]


def test_resolver_renders_one_item_per_page_fitting_the_model() -> None:
    items = resolve(["query", file_part(PDF)], model_pixels=100_000)
    assert [(i.input_index, i.page) for i in items] == [(0, None), (1, 1), (1, 2), (1, 3)]
    for item in items[1:]:
        meta = item.item.meta
        assert item.param == "input[1].file"
        assert meta["source"] == "data" and meta["format"] == "pdf" and meta["pages"] == 3
        assert meta["page"] == item.page
        assert 95_000 <= meta["width"] * meta["height"] <= 100_000
    assert items[1].item.meta["height"] > items[1].item.meta["width"]  # portrait page 1


def test_pdf_page_equals_the_same_page_sent_as_png() -> None:
    """A server-rendered PDF page and the page pre-rendered to PNG at the same DPI are one
    picture: pixel-identical, so identical content_hash (one cache entry)."""
    dpi = 100.0
    doc = pdfium.PdfDocument(PDF)
    try:
        page = doc[1]
        bitmap = page.render(scale=dpi / 72)
        png = io.BytesIO()
        bitmap.to_pil().convert("RGB").save(png, "PNG")
        page.close()
    finally:
        doc.close()
    from_pdf, from_png = resolve(
        [file_part(PDF, pages="2"), data_uri(png.getvalue(), "image/png")], pdf_dpi=dpi
    )
    assert from_pdf.page == 2 and from_png.page is None
    assert from_pdf.item.image.size == from_png.item.image.size == (417, 278)
    assert from_pdf.item.image.tobytes() == from_png.item.image.tobytes()
    assert from_pdf.item.content_hash == from_png.item.content_hash


def test_pages_in_the_part_or_in_file() -> None:
    in_part = resolve([file_part(PDF, pages="2-3")], pdf_dpi=36)
    in_file = resolve(
        [{"type": "file", "file": {"file_data": data_uri(PDF), "pages": "2-3"}}], pdf_dpi=36
    )
    assert [i.page for i in in_part] == [i.page for i in in_file] == [2, 3]
    assert [i.item.content_hash for i in in_part] == [i.item.content_hash for i in in_file]


def test_pages_given_twice_differently_is_rejected() -> None:
    part = {"type": "file", "pages": "1", "file": {"file_data": data_uri(PDF), "pages": "2"}}
    with pytest.raises(InvalidRequest) as err:
        resolve([part])
    assert err.value.param == "input[0].pages"
    assert "given twice" in err.value.message


def test_page_out_of_range_is_400_with_the_pages_param() -> None:
    with pytest.raises(InvalidRequest) as err:
        resolve(["x", file_part(PDF, pages="2,9")])
    assert err.value.status == 400
    assert err.value.param == "input[1].pages"
    assert err.value.message == ("input[1].pages: page 9 is out of range: the PDF has 3 pages")


def test_max_pdf_pages_cap() -> None:
    with pytest.raises(InvalidRequest) as err:
        resolve([file_part(PDF)], max_pdf_pages=2)
    assert err.value.status == 400 and err.value.param == "input[0].file"
    assert "3 PDF pages selected, more than the server's limit of 2 (--max-pdf-pages)" in (
        err.value.message
    )
    assert '"pages": "1-2"' in err.value.message
    assert len(resolve([file_part(PDF, pages="1-2")], max_pdf_pages=2, pdf_dpi=36)) == 2


def test_pdf_pages_count_against_max_inputs() -> None:
    with pytest.raises(InvalidRequest) as err:
        resolve(["a", "b", file_part(PDF)], max_inputs=4)
    assert err.value.param == "input[2].file"
    assert "--max-inputs" in err.value.message


def test_pages_on_an_image_is_rejected() -> None:
    png = io.BytesIO()
    from PIL import Image

    Image.new("RGB", (4, 4)).save(png, "PNG")
    part = {"type": "image_url", "image_url": {"url": data_uri(png.getvalue())}, "pages": "1"}
    with pytest.raises(InvalidRequest) as err:
        resolve([part])
    assert err.value.param == "input[0].pages"
    assert "applies only to PDFs" in err.value.message


def test_encrypted_pdf_is_a_media_error() -> None:
    with pytest.raises(MediaError) as err:
        resolve([file_part(encrypted_pdf())])
    assert err.value.status == 400 and err.value.param == "input[0].file"
    assert err.value.message == (
        "input[0].file: the PDF is password-protected; send a copy without a password"
    )


def test_corrupt_pdf_is_a_media_error() -> None:
    with pytest.raises(MediaError) as err:
        resolve(["ok", file_part(b"%PDF-1.7\n" + b"\x00garbage" * 64)])
    assert err.value.param == "input[1].file"
    assert err.value.message.startswith("input[1].file: the PDF is corrupt or not a PDF")
    truncated = PDF[: len(PDF) // 3]
    with pytest.raises(MediaError) as trunc:
        resolve([file_part(truncated)])
    assert trunc.value.param == "input[0].file"


def test_rendering_runs_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    import app.media.pdf as pdf_module

    threads: list[int] = []
    original = pdf_module.render_page_bitmap

    def spy(page, scale):
        threads.append(threading.get_ident())
        return original(page, scale)

    monkeypatch.setattr(pdf_module, "render_page_bitmap", spy)

    async def go() -> int:
        loop_thread = threading.get_ident()
        resolver = InputResolver(Settings(model="t", pdf_dpi=36))
        try:
            await resolver.resolve([file_part(PDF)])
        finally:
            await resolver.aclose()
        return loop_thread

    loop_thread = asyncio.run(go())
    assert len(threads) == 3 and loop_thread not in threads
