"""Job items as they travel in an RQ job: text, token ids, or an image as the bytes of the file
it was decoded from (a rendered PDF page as lossless PNG), with the cache key and ``input[i]``
param the server chose for it. RQ pickles them with the chunk's arguments."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

from app.engine.base import EngineInput, ImageInput, TextInput, TokenInput
from app.media.images import decode_image


@dataclass(frozen=True)
class JobItem:
    kind: str  # "text" | "tokens" | "image"
    value: Any  # str | tuple[int, ...] | encoded image bytes
    key: str | None
    param: str
    image_format: str = ""
    content_hash: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    prompt_name: str | None = None

    @classmethod
    def of(cls, item: EngineInput, key: str | None, param: str) -> JobItem:
        if isinstance(item, TextInput):
            return cls("text", item.text, key, param, prompt_name=item.prompt_name)
        if isinstance(item, TokenInput):
            return cls("tokens", tuple(item.ids), key, param, prompt_name=item.prompt_name)
        if isinstance(item, ImageInput):
            data, fmt = item.source, str(item.meta.get("format", ""))
            if data is None:  # a rendered PDF page (or an image made in code)
                buf = io.BytesIO()
                item.image.convert("RGB").save(buf, format="PNG", compress_level=1)
                data, fmt = buf.getvalue(), "png"
            return cls("image", data, key, param, fmt, item.content_hash, dict(item.meta))
        raise TypeError(f"not an engine input: {type(item).__name__}")

    def to_input(self) -> EngineInput:
        if self.kind == "text":
            return TextInput(self.value, self.prompt_name)
        if self.kind == "tokens":
            return TokenInput(tuple(self.value), self.prompt_name)
        # The server already checked the pixel limit on these very bytes.
        image = decode_image(self.value, self.image_format, max_pixels=1 << 62, param=self.param)
        return ImageInput(image, self.content_hash, self.meta, source=self.value)
