"""Safe image decoding to RGB, and the content hash that names a decoded picture.

The pixel count is checked from the header before any pixel data is decoded (Pillow's
``Image.open`` is lazy), so a tiny file declaring huge dimensions costs nothing.
"""

from __future__ import annotations

import hashlib
import io

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from app.errors import MediaError
from app.media.sniff import PIL_FORMATS

_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})


def content_hash(image: Image.Image) -> str:
    """sha256 hex of an RGB image's size and pixels: equal pictures hash equal, wherever from."""
    if image.mode != "RGB":
        image = image.convert("RGB")
    h = hashlib.sha256()
    h.update(f"RGB:{image.width}x{image.height}:".encode())
    h.update(image.tobytes())
    return h.hexdigest()


def check_pixels(width: int, height: int, *, max_pixels: int, param: str) -> None:
    if width <= 0 or height <= 0:
        raise MediaError(f"{param}: the image declares an empty size {width}x{height}", param)
    if width * height > max_pixels:
        raise MediaError(
            f"{param}: the image is {width}x{height} = {width * height} pixels, more than the "
            f"server's limit of {max_pixels} (--max-image-pixels); downscale it before sending",
            param,
        )


def decode_image(data: bytes, kind: str, *, max_pixels: int, param: str) -> Image.Image:
    """Decode ``data`` (already sniffed as ``kind``) to an RGB image.

    First frame of animations, EXIF orientation applied, alpha composited on white,
    CMYK / 16-bit / palette / grey converted to 8-bit RGB.
    """
    fmt = PIL_FORMATS[kind]
    try:
        # Pillow warns above Image.MAX_IMAGE_PIXELS and raises above twice that; our own
        # limit is checked right below. (warnings.catch_warnings is not thread-safe: not used.)
        image = Image.open(io.BytesIO(data), formats=[fmt])
    except Image.DecompressionBombError:
        raise MediaError(
            f"{param}: the image declares far more pixels than the server's limit of "
            f"{max_pixels} (--max-image-pixels); downscale it before sending",
            param,
        ) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise MediaError(
            f"{param}: the {fmt} header is unreadable ({exc}); the file is corrupt",
            param,
        ) from None
    check_pixels(image.width, image.height, max_pixels=max_pixels, param=param)
    try:
        image.seek(0)
        image.load()
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        msg = str(exc)
        if "truncated" in msg or isinstance(exc, EOFError) or "broken" in msg:
            raise MediaError(
                f"{param}: the {fmt} file is truncated ({msg}); the upload or download was cut "
                "short - send the complete file",
                param,
            ) from None
        raise MediaError(f"{param}: the {fmt} data could not be decoded ({msg})", param) from None
    try:
        image = ImageOps.exif_transpose(image) or image
    except Exception:  # noqa: BLE001 - a broken EXIF block must not reject a readable picture
        pass
    try:
        rgb = to_rgb(image)
    except (OSError, ValueError) as exc:
        raise MediaError(
            f"{param}: the image's colour mode {image.mode} cannot be converted to RGB ({exc})",
            param,
        ) from None
    check_pixels(rgb.width, rgb.height, max_pixels=max_pixels, param=param)
    return rgb


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB of any Pillow mode; transparency is composited on white."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    elif mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        image = _high_depth_to_l(image)
        mode = image.mode
    elif mode in ("1", "L") and "transparency" in image.info:
        image = image.convert("LA")
        mode = "LA"
    elif mode not in _ALPHA_MODES:
        return image.convert("RGB")
    if mode in _ALPHA_MODES:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _high_depth_to_l(image: Image.Image) -> Image.Image:
    """16/32-bit integer or float grey to 8-bit grey, scaling (not clipping) 16-bit ranges."""
    arr = np.asarray(image)
    if image.mode == "F":
        arr = arr.astype(np.float64)
        top = float(arr.max()) if arr.size else 0.0
        if top <= 1.0:
            arr = arr * 255.0
        out = np.clip(arr, 0, 255)
    else:
        arr = arr.astype(np.int64)
        if image.mode.startswith("I;16") or (arr.size and int(arr.max()) > 255):
            out = np.clip(arr, 0, 65535) / 257.0
        else:
            out = np.clip(arr, 0, 255)
    return Image.fromarray(np.rint(out).astype(np.uint8))
