"""Job items in a form a worker on another machine can read: text, token ids, or an image as
the PNG bytes of its decoded RGB pixels (lossless, so the worker sees the exact same pixels),
each with the cache key the server chose for it.

Blob layout: ``uint32 header length | JSON header | concatenated PNG bytes``.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from PIL import Image

from app.cache import image_content_hash
from app.engine.base import EngineInput, ImageInput, TextInput, TokenInput

_LEN = struct.Struct("<I")


@dataclass(frozen=True)
class JobItem:
    input: EngineInput
    cache_key: str | None = None
    index: int | None = None  # position in the original request (for error params)


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    rgb.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def encode_items(items: Sequence[JobItem]) -> bytes:
    header: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    offset = 0
    for it in items:
        entry: dict[str, Any] = {"key": it.cache_key, "index": it.index}
        inp = it.input
        if isinstance(inp, TextInput):
            entry |= {"kind": "text", "text": inp.text, "prompt": inp.prompt_name}
        elif isinstance(inp, TokenInput):
            entry |= {"kind": "tokens", "ids": list(inp.ids), "prompt": inp.prompt_name}
        elif isinstance(inp, ImageInput):
            png = _png(inp.image)
            entry |= {
                "kind": "image",
                "hash": image_content_hash(inp),
                "meta": inp.meta,
                "off": offset,
                "len": len(png),
            }
            blobs.append(png)
            offset += len(png)
        else:
            raise TypeError(f"not an engine input: {type(inp).__name__}")
        header.append(entry)
    head = orjson.dumps(header, default=str)
    return b"".join([_LEN.pack(len(head)), head, *blobs])


def decode_items(blob: bytes) -> list[JobItem]:
    (n,) = _LEN.unpack_from(blob, 0)
    header = orjson.loads(blob[_LEN.size : _LEN.size + n])
    base = _LEN.size + n
    out: list[JobItem] = []
    for entry in header:
        kind = entry["kind"]
        inp: EngineInput
        if kind == "text":
            inp = TextInput(entry["text"], entry.get("prompt"))
        elif kind == "tokens":
            inp = TokenInput(tuple(entry["ids"]), entry.get("prompt"))
        elif kind == "image":
            start = base + entry["off"]
            image = Image.open(io.BytesIO(blob[start : start + entry["len"]]))
            image.load()
            inp = ImageInput(image.convert("RGB"), entry["hash"], entry.get("meta") or {})
        else:
            raise ValueError(f"unknown job item kind {kind!r}")
        out.append(JobItem(inp, entry.get("key"), entry.get("index")))
    return out
