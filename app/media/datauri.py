"""Decoding of ``data:`` URIs (RFC 2397). The declared media type is ignored: bytes decide."""

from __future__ import annotations

import base64
import binascii
import re
from urllib.parse import unquote_to_bytes

from app.errors import MediaError, PayloadTooLarge

_WHITESPACE = re.compile(rb"\s+")


def is_data_uri(text: str) -> bool:
    return text[:5].lower() == "data:"


def decode_data_uri(uri: str, *, max_bytes: int, param: str) -> bytes:
    """The bytes held by ``uri``. Raises MediaError (malformed) or PayloadTooLarge (> max_bytes)."""
    header, sep, payload = uri.partition(",")
    if not sep:
        raise MediaError(
            f"{param}: malformed data URI: no ',' after the header "
            "(expected data:<type>;base64,<data>)",
            param,
        )
    is_base64 = header.lower().rstrip().endswith(";base64")
    if is_base64:
        # Decoded size is about 3/4 of the encoded size: refuse before decoding anything big.
        if (len(payload) // 4) * 3 > max_bytes + 3:
            raise _too_large(param, max_bytes)
        raw = _WHITESPACE.sub(b"", payload.encode("ascii", "replace"))
        raw += b"=" * (-len(raw) % 4)
        try:
            data = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            try:
                data = base64.b64decode(raw, altchars=b"-_", validate=True)
            except (binascii.Error, ValueError) as exc:
                raise MediaError(
                    f"{param}: the data URI's base64 payload is invalid ({exc})", param
                ) from None
    else:
        if len(payload) > 3 * max_bytes + 3:
            raise _too_large(param, max_bytes)
        data = unquote_to_bytes(payload)
    if len(data) > max_bytes:
        raise _too_large(param, max_bytes)
    if not data:
        raise MediaError(f"{param}: the data URI holds no data", param)
    return data


def _too_large(param: str, max_bytes: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"{param}: inline media is larger than {max_bytes} bytes "
        "(the server's --media-max-bytes limit)",
        param,
    )
