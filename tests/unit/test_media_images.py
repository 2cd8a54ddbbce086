"""Sniffing, data URIs and image decoding (formats, orientation, colour modes, bombs)."""

from __future__ import annotations

import base64
import io
import sys
from pathlib import Path

import pytest
from PIL import Image

from app.errors import MediaError, PayloadTooLarge
from app.media.datauri import decode_data_uri, is_data_uri
from app.media.images import content_hash, decode_image, to_rgb
from app.media.sniff import describe_unknown, sniff

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.media_server import (  # noqa: E402
    HTML_PAGE,
    encrypted_pdf,
    make_images,
    make_pdf,
    png_header_only,
)

IMAGES = make_images()


def decode(data: bytes, max_pixels: int = 64_000_000) -> Image.Image:
    kind = sniff(data)
    assert kind is not None
    return decode_image(data, kind, max_pixels=max_pixels, param="input[0]")


# ---------------------------------------------------------------------------- sniff


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("png.png", "png"),
        ("jpeg.jpg", "jpeg"),
        ("webp.webp", "webp"),
        ("gif.gif", "gif"),
        ("bmp.bmp", "bmp"),
        ("tiff.tiff", "tiff"),
        ("cmyk.jpg", "jpeg"),
    ],
)
def test_sniff_images_by_magic_bytes(name: str, kind: str) -> None:
    assert sniff(IMAGES[name]) == kind


def test_sniff_pdf_and_unknowns() -> None:
    assert sniff(make_pdf()) == "pdf"
    assert sniff(encrypted_pdf()) == "pdf"
    assert sniff(b"junk before\n" + make_pdf()) == "pdf"
    assert sniff(HTML_PAGE) is None
    assert sniff(b"") is None
    assert "HTML page" in describe_unknown(HTML_PAGE)
    assert "empty" in describe_unknown(b"")
    assert "SVG" in describe_unknown(b"<svg xmlns='http://www.w3.org/2000/svg'/>")
    assert "HEIC" in describe_unknown(b"\x00\x00\x00\x18ftypheic" + b"\x00" * 16)
    assert "ff 00" in describe_unknown(b"\xff\x00\x01\x02")


# ---------------------------------------------------------------------------- data URIs


def test_data_uri_base64_and_percent() -> None:
    png = IMAGES["png.png"]
    b64 = base64.b64encode(png).decode()
    assert is_data_uri("DATA:image/png;base64,xx")
    assert decode_data_uri(f"data:image/png;base64,{b64}", max_bytes=1 << 20, param="p") == png
    # whitespace, missing padding and url-safe alphabet are tolerated
    wrapped = "\n".join(b64[i : i + 60] for i in range(0, len(b64), 60)).rstrip("=")
    assert decode_data_uri(f"data:;base64,{wrapped}", max_bytes=1 << 20, param="p") == png
    urlsafe = base64.urlsafe_b64encode(png).decode()
    assert decode_data_uri(f"data:image/png;base64,{urlsafe}", max_bytes=1 << 20, param="p") == png
    assert decode_data_uri("data:text/plain,a%20b", max_bytes=100, param="p") == b"a b"


def test_data_uri_errors() -> None:
    with pytest.raises(MediaError) as err:
        decode_data_uri("data:image/png;base64", max_bytes=100, param="input[2]")
    assert err.value.param == "input[2]" and err.value.message.startswith("input[2]: malformed")
    with pytest.raises(MediaError, match="base64 payload is invalid"):
        decode_data_uri("data:image/png;base64,@@@@", max_bytes=100, param="input[2]")
    with pytest.raises(MediaError, match="holds no data"):
        decode_data_uri("data:image/png;base64,", max_bytes=100, param="input[2]")
    big = base64.b64encode(b"\x00" * 2000).decode()
    with pytest.raises(PayloadTooLarge) as too_big:
        decode_data_uri(f"data:image/png;base64,{big}", max_bytes=1000, param="input[1].file")
    assert too_big.value.status == 413
    assert too_big.value.param == "input[1].file"
    assert "--media-max-bytes" in too_big.value.message


# ---------------------------------------------------------------------------- decoding


@pytest.mark.parametrize("name", ["png.png", "webp.webp", "bmp.bmp", "tiff.tiff"])
def test_lossless_formats_decode_to_identical_pixels(name: str) -> None:
    reference = decode(IMAGES["png.png"])
    img = decode(IMAGES[name])
    assert img.mode == "RGB" and img.size == (64, 48)
    assert content_hash(img) == content_hash(reference)


def test_jpeg_decodes_to_rgb() -> None:
    img = decode(IMAGES["jpeg.jpg"])
    assert img.mode == "RGB" and img.size == (64, 48)
    r, g, b = img.getpixel((5, 5))
    assert r > 180 and g < 80 and b < 80  # the red top-left quadrant


def test_gif_takes_the_first_frame() -> None:
    img = decode(IMAGES["gif.gif"])
    assert img.mode == "RGB"
    assert img.getpixel((10, 10)) == (255, 0, 0)


def test_exif_orientation_is_applied() -> None:
    img = decode(IMAGES["exif-rotated.jpg"])
    assert img.size == (48, 64)  # stored 64x48, EXIF orientation 6 = rotate 90 degrees CW
    r, g, b = img.getpixel((40, 5))  # the red top-left quadrant is now top-right
    assert r > 180 and g < 80 and b < 80
    r, g, b = img.getpixel((5, 60))  # the blue bottom-right quadrant is now bottom-left
    assert b > 180 and r < 80


def test_alpha_is_composited_on_white() -> None:
    img = decode(IMAGES["rgba.png"])
    assert img.mode == "RGB"
    assert img.getpixel((2, 2)) == (255, 255, 255)  # transparent red -> white
    assert img.getpixel((20, 2)) == (0, 0, 255)
    pal = decode(IMAGES["palette-transparent.png"])
    assert pal.getpixel((1, 1)) == (255, 255, 255)
    assert pal.getpixel((6, 1)) == (0, 255, 0)


def test_cmyk_jpeg_becomes_rgb() -> None:
    img = decode(IMAGES["cmyk.jpg"])
    assert img.mode == "RGB" and img.size == (64, 48)
    r, g, b = img.getpixel((5, 5))
    assert r > 150 and g < 100 and b < 100


def test_16_bit_png_is_scaled_not_clipped() -> None:
    img = decode(IMAGES["png16.png"])
    assert img.mode == "RGB" and img.size == (256, 4)
    assert img.getpixel((0, 0)) == (0, 0, 0)
    assert img.getpixel((128, 0)) == (128, 128, 128)
    assert img.getpixel((255, 0)) == (255, 255, 255)


@pytest.mark.parametrize("mode", ["1", "L", "LA", "I", "F", "RGBA", "CMYK", "YCbCr", "P"])
def test_to_rgb_handles_every_common_mode(mode: str) -> None:
    src = Image.new("RGB", (4, 4), (10, 200, 30)).convert(mode)
    assert to_rgb(src).mode == "RGB"


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_pixel_cap_is_checked_before_decoding() -> None:
    with pytest.raises(MediaError) as err:
        decode(png_header_only(10_000, 10_000))  # 100 M pixels, between Pillow's two limits
    assert err.value.param == "input[0]"
    assert "10000x10000 = 100000000 pixels" in err.value.message
    assert "--max-image-pixels" in err.value.message
    with pytest.raises(MediaError) as small_cap:
        decode(IMAGES["png.png"], max_pixels=1000)
    assert "64x48 = 3072 pixels, more than the server's limit of 1000" in small_cap.value.message


def test_decompression_bomb_is_refused() -> None:
    bomb = png_header_only(100_000, 100_000)
    assert len(bomb) < 200
    with pytest.raises(MediaError) as err:
        decode(bomb)
    assert "--max-image-pixels" in err.value.message


def test_truncated_image_is_an_actionable_error() -> None:
    jpeg = IMAGES["jpeg.jpg"]
    with pytest.raises(MediaError) as err:
        decode(jpeg[: len(jpeg) // 2])
    assert err.value.message.startswith("input[0]: the JPEG file is truncated")
    assert "send the complete file" in err.value.message
    png = IMAGES["png.png"]
    with pytest.raises(MediaError, match="truncated|could not be decoded"):
        decode(png[: len(png) - 30])


def test_corrupt_header_is_a_media_error() -> None:
    with pytest.raises(MediaError, match="unreadable"):
        decode_image(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "png", max_pixels=10**6, param="x")


def test_content_hash_depends_on_pixels_and_size_only() -> None:
    a = Image.new("RGB", (4, 6), (1, 2, 3))
    b = Image.new("RGB", (6, 4), (1, 2, 3))
    assert content_hash(a) != content_hash(b)
    assert content_hash(a) == content_hash(a.convert("RGBA"))
    buf = io.BytesIO()
    a.save(buf, "PNG", optimize=True)
    assert content_hash(decode(buf.getvalue())) == content_hash(a)
