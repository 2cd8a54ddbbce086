"""InputResolver: the shapes `input` may take, their errors, and typed content parts."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import io

import pytest
from PIL import Image

from app.engine.base import ImageInput, TextInput, TokenInput
from app.errors import ApiError, InvalidRequest, MediaError
from app.inputs import InputResolver, ResolvedItem
from app.settings import Settings


def png_uri(color: tuple[int, int, int] = (200, 10, 10), size: tuple[int, int] = (8, 6)) -> str:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


class NoDns:
    """A resolver that must never be asked (structural errors come before any fetch)."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        raise AssertionError("no DNS lookup expected")


def resolve(raw: object, resolver: NoDns | None = None, **settings) -> list[ResolvedItem]:
    async def go() -> list[ResolvedItem]:
        r = InputResolver(Settings(model="t", **settings), resolver=resolver or NoDns())
        try:
            return await r.resolve(raw)
        finally:
            await r.aclose()

    return asyncio.run(go())


def invalid(raw: object, param: str, fragment: str, **settings) -> ApiError:
    with pytest.raises(ApiError) as err:
        resolve(raw, **settings)
    exc = err.value
    assert type(exc) is InvalidRequest, f"{type(exc).__name__}: {exc.message}"
    assert exc.status == 400
    assert exc.param == param
    assert exc.message.startswith(f"{param}: ")
    assert fragment in exc.message
    return exc


# ---------------------------------------------------------------------------- accepted shapes


def test_single_string_is_one_text() -> None:
    assert resolve("hello world") == [ResolvedItem(0, None, TextInput("hello world"), "input")]


def test_list_of_strings() -> None:
    items = resolve(["a", "b", "c"])
    assert [i.item for i in items] == [TextInput("a"), TextInput("b"), TextInput("c")]
    assert [(i.input_index, i.param) for i in items] == [
        (0, "input[0]"),
        (1, "input[1]"),
        (2, "input[2]"),
    ]


def test_list_of_ints_is_one_token_input() -> None:
    (item,) = resolve([101, 2023, 102], token_ids="model")
    assert item == ResolvedItem(0, None, TokenInput((101, 2023, 102)), "input")


def test_list_of_lists_of_ints_is_several_token_inputs() -> None:
    items = resolve([[1, 2], [3], [4, 5, 6]], token_ids="model")
    assert [i.item for i in items] == [TokenInput((1, 2)), TokenInput((3,)), TokenInput((4, 5, 6))]
    assert [i.param for i in items] == ["input[0]", "input[1]", "input[2]"]


def test_token_ids_are_not_checked_against_a_vocabulary_here() -> None:
    (item,) = resolve([10**9, -1], token_ids="model")
    assert item.item == TokenInput((10**9, -1))  # the engine validates against its tokenizer


def test_data_uri_string_is_an_image() -> None:
    (item,) = resolve(png_uri())
    assert isinstance(item.item, ImageInput)
    assert item.item.image.mode == "RGB" and item.item.image.size == (8, 6)
    assert item.item.meta == {"width": 8, "height": 6, "source": "data", "format": "png"}
    assert len(item.item.content_hash) == 64


def test_typed_parts_mixed_with_strings() -> None:
    uri = png_uri()
    items = resolve(
        [
            "plain text",
            {"type": "text", "text": "typed text"},
            {"type": "text", "text": "https://example.com is text in a text part"},
            {"type": "image_url", "image_url": {"url": uri, "detail": "high"}},
            {"type": "image_url", "image_url": uri},
            {"type": "file", "file": {"file_data": uri, "filename": "pic.png"}},
            uri,
        ]
    )
    assert [type(i.item).__name__ for i in items] == [
        "TextInput",
        "TextInput",
        "TextInput",
        "ImageInput",
        "ImageInput",
        "ImageInput",
        "ImageInput",
    ]
    assert [i.param for i in items] == [
        "input[0]",
        "input[1].text",
        "input[2].text",
        "input[3].image_url",
        "input[4].image_url",
        "input[5].file",
        "input[6]",
    ]
    assert items[2].item == TextInput("https://example.com is text in a text part")
    assert len({i.item.content_hash for i in items[3:]}) == 1


def test_single_content_part_without_a_list() -> None:
    (item,) = resolve({"type": "image_url", "image_url": {"url": png_uri()}})
    assert item.param == "input.image_url" and isinstance(item.item, ImageInput)


def test_order_and_indices_are_kept() -> None:
    items = resolve([png_uri((1, 1, 1)), "x", png_uri((2, 2, 2))])
    assert [i.input_index for i in items] == [0, 1, 2]
    assert items[0].item.content_hash != items[2].item.content_hash


def test_resolved_item_is_frozen() -> None:
    (item,) = resolve("x")
    with pytest.raises(dataclasses.FrozenInstanceError):
        item.page = 3  # type: ignore[misc]


def test_resolver_is_reusable_across_requests() -> None:
    async def go() -> tuple[int, int]:
        r = InputResolver(Settings(model="t"))
        try:
            a = await r.resolve(["a", png_uri()])
            b = await r.resolve("b")
            return len(a), len(b)
        finally:
            await r.aclose()

    assert asyncio.run(go()) == (2, 1)


# ---------------------------------------------------------------------------- shape errors


@pytest.mark.parametrize(
    ("raw", "param", "fragment"),
    [
        ("", "input", "must not be an empty string"),
        ([], "input", "must not be an empty array"),
        (None, "input", "not null"),
        (5, "input", "not integer"),
        (1.5, "input", "not number"),
        (True, "input", "not boolean"),
        ([""], "input[0]", "must not be an empty string"),
        (["a", ""], "input[1]", "must not be an empty string"),
        (["a", None], "input[1]", "not null"),
        (["a", 1.5], "input[1]", "not number"),
        ([True, False], "input[0]", "not boolean"),
        ([1, "a"], "input", "item 1 is string"),
        ([1, True], "input", "item 1 is boolean"),
        ([1, 2.0], "input", "item 1 is number"),
        ([[]], "input[0]", "must not be empty"),
        ([[1], [2, "x"]], "input[1]", "item 1 is string"),
        ([[1], "text"], "input[0]", "cannot be mixed"),
        (["text", [1, 2]], "input[1]", "cannot be mixed"),
        ([{"type": "text"}], "input[0].text", 'needs a string "text"'),
        ([{"type": "text", "text": ""}], "input[0].text", "must not be an empty string"),
        ([{"type": "video", "video": {}}], "input[0].type", "unknown content part type 'video'"),
        ([{"text": "no type"}], "input[0].type", "unknown content part type None"),
        ([{"type": "image_url"}], "input[0].image_url", 'needs an object "image_url"'),
        ([{"type": "image_url", "image_url": {}}], "input[0].image_url.url", "non-empty string"),
        ([{"type": "image_url", "image_url": {"url": " "}}], "input[0].image_url.url", "non-empty"),
        ([{"type": "file", "file": "x"}], "input[0].file", 'needs an object "file"'),
        ([{"type": "file", "file": {}}], "input[0].file", 'exactly one of "file_data"'),
        (
            [{"type": "file", "file": {"file_data": "data:,x", "url": "https://e.com/a.pdf"}}],
            "input[0].file",
            'exactly one of "file_data"',
        ),
        (
            [{"type": "file", "file": {"file_id": "file-abc"}}],
            "input[0].file.file_id",
            "file ids are not supported",
        ),
        (
            [{"type": "file", "file": {"file_data": "JVBERi0xLjQK"}}],
            "input[0].file.file_data",
            "must be a data: URI",
        ),
    ],
)
def test_shape_errors(raw: object, param: str, fragment: str) -> None:
    invalid(raw, param, fragment)


def test_max_inputs() -> None:
    invalid(["a", "b", "c"], "input", "3 inputs, more than the server's limit of 2", max_inputs=2)
    invalid([[1], [2], [3]], "input", "--max-inputs", max_inputs=2)
    assert (
        len(resolve([1, 2, 3, 4, 5], max_inputs=2, token_ids="model")) == 1
    )  # one token input, however long
    assert len(resolve(["a", "b"], max_inputs=2)) == 2


def test_structural_errors_come_before_any_fetch() -> None:
    dns = NoDns()
    with pytest.raises(InvalidRequest) as err:
        resolve(["https://media.example.com/a.png", {"type": "nope"}], resolver=dns)
    assert err.value.param == "input[1].type"
    assert dns.calls == []


def test_one_bad_media_item_fails_the_request() -> None:
    with pytest.raises(MediaError) as err:
        resolve([png_uri(), "text", "data:image/png;base64,bm90IGFuIGltYWdl"])
    assert err.value.param == "input[2]"
    assert err.value.message.startswith("input[2]: not a supported image or PDF")
    assert err.value.status == 400


def test_type_is_decided_by_bytes_not_the_declared_type() -> None:
    jpeg = io.BytesIO()
    Image.new("RGB", (4, 4), (0, 0, 255)).save(jpeg, "JPEG")
    mislabelled = "data:application/pdf;base64," + base64.b64encode(jpeg.getvalue()).decode()
    (item,) = resolve([{"type": "file", "file": {"file_data": mislabelled}}])
    assert item.item.meta["format"] == "jpeg"
    html = "data:image/png;base64," + base64.b64encode(b"<html><body>hi</body></html>").decode()
    with pytest.raises(MediaError, match="looks like an HTML page"):
        resolve(html)


def test_uppercase_data_scheme_is_media() -> None:
    (item,) = resolve("DATA:image/png;base64," + png_uri().split(",", 1)[1])
    assert isinstance(item.item, ImageInput)


def test_text_that_looks_like_a_data_uri_gets_a_hint() -> None:
    with pytest.raises(MediaError) as err:
        resolve(["data: the figures for 2024"])
    assert err.value.param == "input[0]"
    assert err.value.message.startswith("input[0]: malformed data URI")
    assert '{"type": "text", "text": ...}' in err.value.message
    (item,) = resolve([{"type": "text", "text": "data: the figures for 2024"}])
    assert item.item == TextInput("data: the figures for 2024")
