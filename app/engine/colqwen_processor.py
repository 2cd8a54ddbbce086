"""ColQwen2.5 input processing exactly as colpali-engine 0.3.18's ColQwen2_5_Processor does it,
without torch: the tokenizer from the model directory and transformers' PIL-backend Qwen2-VL
image processor (bicubic resize via smart_resize with the model's min/max pixels, rescale,
CLIP normalisation, 14x14x2 patches).

Query  = query_prefix + text + 10 x "<|endoftext|>"   (0.3.18: no prefix; 0.3.10 used "Query: ")
Image  = visual prompt with "<|image_pad|>" expanded to one id per merged 28x28 patch.
"""

from __future__ import annotations

import inspect
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from app.errors import InputTooLong, InvalidTokenIds

log = logging.getLogger(__name__)

DEFAULT_QUERY_PREFIX = ""
DEFAULT_QUERY_SUFFIX = "<|endoftext|>" * 10
DEFAULT_VISUAL_PROMPT = (
    "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>"
    "Describe the image.<|im_end|><|endoftext|>"
)
IMAGE_TOKEN = "<|image_pad|>"


@dataclass
class ColQwenPayload:
    input_ids: np.ndarray  # (n,) int32, real tokens only
    pixel_values: np.ndarray | None = None  # (n_patches, C*T*P*P) float32
    grid_thw: tuple[int, int, int] | None = None
    image_span: tuple[int, int] | None = None  # [start, end) of image tokens in input_ids


def _quiet_transformers() -> None:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        from transformers.utils import logging as tlog

        tlog.set_verbosity_error()
    except Exception:  # pragma: no cover - best effort
        pass


def load_image_processor_config(path: Path) -> dict[str, Any]:
    """Accept both the classic preprocessor_config.json and transformers-5 processor_config.json."""
    import json

    pre = path / "preprocessor_config.json"
    if pre.exists():
        return json.loads(pre.read_text())
    proc = path / "processor_config.json"
    if proc.exists():
        data = json.loads(proc.read_text())
        return dict(data.get("image_processor", data))
    raise FileNotFoundError(
        f"{path} has neither preprocessor_config.json nor processor_config.json "
        "(the Qwen2-VL image processor settings)"
    )


def make_image_processor(cfg: dict[str, Any]):
    _quiet_transformers()
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil,
    )

    accepted = set(inspect.signature(Qwen2VLImageProcessorPil.__init__).parameters)
    kwargs = {k: v for k, v in cfg.items() if not k.startswith("_")}
    for drop in ("image_processor_type", "processor_class", "auto_map"):
        kwargs.pop(drop, None)
    size = dict(kwargs.pop("size", None) or {})
    if "min_pixels" in kwargs:
        size["shortest_edge"] = kwargs.pop("min_pixels")
    if "max_pixels" in kwargs:
        size["longest_edge"] = kwargs.pop("max_pixels")
    size.pop("min_pixels", None)
    size.pop("max_pixels", None)
    if "kwargs" not in accepted:
        kwargs = {k: v for k, v in kwargs.items() if k in accepted}
    return Qwen2VLImageProcessorPil(size=size, **kwargs)


class ColQwenProcessor:
    def __init__(
        self,
        path: Path,
        *,
        image_token_id: int,
        vocab_size: int,
        query_prefix: str | None = None,
        query_suffix: str | None = None,
        visual_prompt: str | None = None,
    ) -> None:
        _quiet_transformers()
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        self.image_processor = make_image_processor(load_image_processor_config(path))
        self.image_token_id = image_token_id
        self.vocab_size = vocab_size
        self.query_prefix = DEFAULT_QUERY_PREFIX if query_prefix is None else query_prefix
        self.query_suffix = DEFAULT_QUERY_SUFFIX if query_suffix is None else query_suffix
        self.visual_prompt = DEFAULT_VISUAL_PROMPT if visual_prompt is None else visual_prompt
        if IMAGE_TOKEN not in self.visual_prompt:
            raise ValueError(f"the visual prompt must contain {IMAGE_TOKEN}")
        self.pad_id = self.tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = self.tokenizer.convert_tokens_to_ids("<|endoftext|>")
        self._prefix_ids = self._encode(self.query_prefix)
        self._suffix_ids = self._encode(self.query_suffix)
        size = self.image_processor.size
        self.min_pixels = int(size.shortest_edge)
        self.max_pixels = int(size.longest_edge)
        self.patch_size = int(self.image_processor.patch_size)
        self.merge_size = int(self.image_processor.merge_size)
        # Special ids a caller must not send as raw token ids (they would break image merging).
        self._forbidden_ids = {
            i
            for t in ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")
            if (i := self.tokenizer.convert_tokens_to_ids(t)) is not None
            and i != self.tokenizer.unk_token_id
        }

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []

    @property
    def max_image_tokens(self) -> int:
        return self.max_pixels // (self.patch_size * self.merge_size) ** 2

    def document_text_ids(
        self, text: str, *, max_tokens: int, truncate: bool, param: str | None
    ) -> list[int]:
        """A text embedded as a document: colpali-engine's ``process_texts`` (no prompt)."""
        return self._cut(self._encode(text), max_tokens, truncate, param)

    def document_token_ids(
        self, ids: tuple[int, ...], *, max_tokens: int, truncate: bool, param: str | None
    ) -> list[int]:
        self._check_ids(ids, param)
        return self._cut(list(ids), max_tokens, truncate, param)

    @staticmethod
    def _cut(ids: list[int], max_tokens: int, truncate: bool, param: str | None) -> list[int]:
        if len(ids) > max_tokens and not truncate:
            raise InputTooLong(
                f"this input is {len(ids)} tokens long; the limit is {max_tokens} tokens. "
                'Shorten it or send "truncate": true.',
                param,
            )
        return ids[:max_tokens]

    def _check_ids(self, ids: tuple[int, ...], param: str | None) -> None:
        bad = [i for i in ids if not 0 <= i < self.vocab_size or i in self._forbidden_ids]
        if bad:
            raise InvalidTokenIds(
                f"token ids must be in [0, {self.vocab_size}) and not vision tokens; "
                f"got {bad[:5]}{'...' if len(bad) > 5 else ''}",
                param,
            )

    def query_ids(
        self, text: str, *, max_tokens: int, truncate: bool, param: str | None
    ) -> list[int]:
        ids = self._encode(self.query_prefix + text + self.query_suffix)
        if len(ids) <= max_tokens:
            return ids
        if not truncate:
            raise InputTooLong(
                f"this input is {len(ids)} tokens long (with the query prompt); the limit is "
                f'{max_tokens} tokens. Shorten it or send "truncate": true.',
                param,
            )
        body = self._encode(self.query_prefix + text)
        keep = max(0, max_tokens - len(self._suffix_ids))
        return (body[:keep] + self._suffix_ids)[:max_tokens]

    def token_query_ids(
        self, ids: tuple[int, ...], *, max_tokens: int, truncate: bool, param: str | None
    ) -> list[int]:
        self._check_ids(ids, param)
        full = self._prefix_ids + list(ids) + self._suffix_ids
        if len(full) <= max_tokens:
            return full
        if not truncate:
            raise InputTooLong(
                f"this input is {len(full)} tokens long (with the query prompt); the limit is "
                f'{max_tokens} tokens. Shorten it or send "truncate": true.',
                param,
            )
        keep = max(0, max_tokens - len(self._suffix_ids))
        return ((self._prefix_ids + list(ids))[:keep] + self._suffix_ids)[:max_tokens]

    def image_token_count(self, width: int, height: int) -> int:
        """The tokens an image of this decoded size becomes (visual prompt included), from the
        resize rule alone: no pixel is resampled."""
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

        factor = self.patch_size * self.merge_size
        h, w = smart_resize(
            height, width, factor, min_pixels=self.min_pixels, max_pixels=self.max_pixels
        )
        return len(self._encode(self.visual_prompt)) - 1 + (h // factor) * (w // factor)

    def image_payload(self, image: Image.Image) -> ColQwenPayload:
        out = self.image_processor(images=[image.convert("RGB")], return_tensors="np")
        pixel_values = np.ascontiguousarray(out["pixel_values"], dtype=np.float32)
        t, h, w = (int(x) for x in out["image_grid_thw"][0])
        n_image = t * h * w // (self.merge_size**2)
        prompt = self._encode(self.visual_prompt)
        at = prompt.index(self.image_token_id)
        ids = prompt[:at] + [self.image_token_id] * n_image + prompt[at + 1 :]
        return ColQwenPayload(
            input_ids=np.asarray(ids, dtype=np.int32),
            pixel_values=pixel_values,
            grid_thw=(t, h, w),
            image_span=(at, at + n_image),
        )
