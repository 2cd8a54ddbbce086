"""Qwen3-VL-Embedding: pooled text AND image vectors in one space (one vector per input).

The reference is the model card's ``Qwen3VLEmbedder`` (a script in the model repo): a system
message holding the instruction (default ``Represent the user's input.``), the user's image or
text, the chat template with the generation prompt, images resized by qwen-vl-utils
(``smart_resize`` with factor 32 between 4x32x32 and 1800x32x32 pixels, PIL's default resample)
and then processed without resizing by the Qwen2-VL image processor; transformers'
``Qwen3VLModel`` (vision tower with deepstack features, M-RoPE), the hidden state of the last
token, L2-normalised. Prompts are instructions: ``query`` is the model card's retrieval
instruction, ``document`` (and no prompt) the default one.

The forward is ours on mlx-embeddings' modules and weights (its numbers agree with the
reference), because its ``Model.__call__`` keeps the M-RoPE positions of the previous call on the
language model and reuses them when the next input is not longer: a second text call raises
(2-D positions indexed as 3-D), and it computes reranker logits from fixed yes/no token ids on
every call. Ours is stateless: per-item positions, a causal + key-padding mask, vision features
and deepstack features merged in batch order.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import numpy as np
from PIL import Image

from app.engine.base import (
    Embedding,
    EngineInput,
    ImageInput,
    ModelInfo,
    Prepared,
    TextInput,
    TokenInput,
)
from app.engine.colqwen_processor import _quiet_transformers
from app.engine.cpu_patch import install_cpu_kernels, warm_up
from app.engine.loading import apply_dtype, dtype_name, load_mlx_model, weights_fingerprint
from app.engine.multivector import causal_padding_mask, l2_normalized, right_padded
from app.errors import InputTooLong, InvalidRequest, UnsupportedInput
from app.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_INSTRUCTION = "Represent the user's input."
QUERY_INSTRUCTION = "Retrieve images or text relevant to the user's query."
IMAGE_FACTOR = 32  # the embedder's image_patch_size (16) x merge size (2)
MIN_PIXELS = 4 * IMAGE_FACTOR * IMAGE_FACTOR
MAX_PIXELS = 1800 * IMAGE_FACTOR * IMAGE_FACTOR
MAX_LENGTH = 8192


@dataclass
class Qwen3VLPayload:
    input_ids: np.ndarray  # (n,) int32
    pixel_values: np.ndarray | None = None  # (patches, C*T*P*P) float32
    grid_thw: tuple[int, int, int] | None = None


class Qwen3VLAdapter:
    def __init__(self, path: Path, settings: Settings) -> None:
        _quiet_transformers()
        from transformers import AutoTokenizer
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
            Qwen2VLImageProcessorPil,
            smart_resize,
        )

        self.smart_resize = smart_resize
        config = json.loads((path / "config.json").read_text())
        self.model = load_mlx_model(path)
        self.dtype = apply_dtype(self.model, settings.dtype)
        self.cpu_kernels = install_cpu_kernels(self.model, settings.cpu_kernels)
        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        if not self.tokenizer.chat_template:
            raise ValueError(f"{path}: the tokenizer has no chat template")
        pre = json.loads((path / "preprocessor_config.json").read_text())
        self.image_processor = Qwen2VLImageProcessorPil(
            **{k: v for k, v in pre.items() if k not in ("image_processor_type", "processor_class")}
        )
        self.merge = int(self.image_processor.merge_size)
        self.image_token_id = int(config["image_token_id"])
        self.video_token_id = int(config["video_token_id"])
        pad = self.tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else 0)
        self.prompts = {"query": QUERY_INSTRUCTION, "document": DEFAULT_INSTRUCTION}
        self.max_tokens = min(settings.max_tokens_per_input, MAX_LENGTH)
        self.lm = self.model.language_model
        self.info = ModelInfo(
            name=settings.model_name,
            kind="pooled",
            dim=int(config["text_config"]["hidden_size"]),
            modalities=("text", "image"),
            max_tokens=self.max_tokens,
            fingerprint=weights_fingerprint(settings.model, path)
            + f"|{dtype_name(self.dtype)}|qwen3vl-embedder",
            dtype=dtype_name(self.dtype),
            extra={
                "architecture": "qwen3_vl",
                "family": "qwen3_vl",
                "reference": "Qwen3-VL-Embedding model card's Qwen3VLEmbedder (transformers "
                "Qwen3VLModel, last token)",
                "pooling": "last",
                "normalized": True,
                # instructions (the system message), not text prefixes
                "prompts": dict(self.prompts),
                "default_prompt_name": None,
                "default_instruction": DEFAULT_INSTRUCTION,
                "matryoshka": True,
                "min_pixels": MIN_PIXELS,
                "max_pixels": MAX_PIXELS,
                "max_image_tokens": MAX_PIXELS // IMAGE_FACTOR**2,
                "fixes": [
                    "stateless positions (mlx-embeddings reuses the previous call's M-RoPE "
                    "positions: the next text call raises)"
                ],
            },
        )
        if self.cpu_kernels.startswith("on"):
            warm_up(self, [TextInput("warm up"), ImageInput(Image.new("RGB", (64, 64)))])

    # ---- any thread ---------------------------------------------------------------------------
    def _instruction(self, item: EngineInput) -> str:
        name = getattr(item, "prompt_name", None)
        if name is None:
            return DEFAULT_INSTRUCTION
        if name not in self.prompts:
            raise InvalidRequest(
                f"model {self.info.name!r} has no prompt {name!r} (its prompts: 'document', "
                "'query')",
                param="prompt_name",
            )
        return self.prompts[name]

    def _chat_ids(self, instruction: str, content: list[dict]) -> list[int]:
        messages = [
            {"role": "system", "content": [{"type": "text", "text": instruction}]},
            {"role": "user", "content": content},
        ]
        text = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False
        )
        return list(self.tokenizer(text)["input_ids"])

    def prepare(self, item: EngineInput, *, truncate: bool = False) -> Prepared:
        instruction = self._instruction(item)
        if isinstance(item, ImageInput):
            image = item.image.convert("RGB")
            w, h = image.size
            rh, rw = self.smart_resize(
                h, w, factor=IMAGE_FACTOR, min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS
            )
            image = image.resize((rw, rh))  # qwen-vl-utils: PIL's default resample
            out = self.image_processor([image], do_resize=False, return_tensors="np")
            grid = tuple(int(x) for x in out["image_grid_thw"][0])
            ids = self._chat_ids(instruction, [{"type": "image"}])
            n_img = int(np.prod(grid)) // self.merge**2
            at = ids.index(self.image_token_id)
            ids = ids[:at] + [self.image_token_id] * n_img + ids[at + 1 :]
            payload = Qwen3VLPayload(
                input_ids=np.asarray(ids, dtype=np.int32),
                pixel_values=np.asarray(out["pixel_values"], dtype=np.float32),
                grid_thw=grid,
            )
            return Prepared(n_tokens=len(ids), payload=payload, kind="image", pixels=rw * rh)
        if isinstance(item, TokenInput):
            raise UnsupportedInput(
                f"{self.info.name} embeds texts in a chat template: send text, not token ids"
            )
        if not isinstance(item, TextInput):
            raise UnsupportedInput(f"unsupported input type {type(item).__name__}")
        content = [{"type": "text", "text": item.text or "NULL"}]
        ids = self._chat_ids(instruction, content)
        if len(ids) > self.max_tokens:
            if not truncate:
                raise InputTooLong(
                    f"this input is {len(ids)} tokens long; the limit for this model is "
                    f'{self.max_tokens} tokens. Shorten it or send "truncate": true.'
                )
            ids = ids[: self.max_tokens]  # the embedder's truncation=True, max_length
        payload = Qwen3VLPayload(input_ids=np.asarray(ids, dtype=np.int32))
        return Prepared(n_tokens=len(ids), payload=payload, kind="text")

    # ---- MLX thread only ------------------------------------------------------------------------
    def forward(self, batch: list[Prepared]) -> list[Embedding]:
        payloads: list[Qwen3VLPayload] = [p.payload for p in batch]
        lengths = [len(p.input_ids) for p in payloads]
        ids = right_padded([p.input_ids for p in payloads], self.pad_id)
        B, L = ids.shape
        embeds = self.lm.model.embed_tokens(mx.array(ids))
        visual = ids == self.image_token_id
        deepstack = None
        images = [p for p in payloads if p.pixel_values is not None]
        if images:
            vision = self.model.vision_tower
            dtype = vision.patch_embed.proj.weight.dtype
            pixels = mx.array(np.concatenate([p.pixel_values for p in images]))
            grids = mx.array(np.array([p.grid_thw for p in images], dtype=np.int32))
            feats, deepstack = vision(pixels.astype(dtype), grids)
            flat_pos = mx.array(np.flatnonzero(visual.reshape(-1)))
            if flat_pos.size != feats.shape[0]:
                raise RuntimeError(
                    f"image features ({feats.shape[0]}) do not match image tokens ({flat_pos.size})"
                )
            flat = embeds.reshape(B * L, -1)
            flat[flat_pos] = feats.astype(flat.dtype)
            embeds = flat.reshape(B, L, -1)
        mask = causal_padding_mask(np.arange(L)[None, :] < np.array(lengths)[:, None])
        hidden = self.lm.model(
            None,
            inputs_embeds=embeds,
            mask=mask,
            position_ids=self._positions(payloads, L),
            visual_pos_masks=mx.array(visual) if images else None,
            deepstack_visual_embeds=deepstack,
        )
        last = hidden[mx.arange(B), mx.array(np.array(lengths) - 1)]
        vecs = l2_normalized(last)
        return [
            Embedding(vectors=np.ascontiguousarray(vecs[b]), n_tokens=lengths[b]) for b in range(B)
        ]

    def _positions(self, payloads: list[Qwen3VLPayload], L: int) -> mx.array:
        """(3, B, L) M-RoPE positions, each item alone (padding gets trailing values)."""
        rows = []
        for p in payloads:
            n = len(p.input_ids)
            grid = None
            if p.grid_thw is not None:
                grid = mx.array(np.array([p.grid_thw], dtype=np.int32))
            pos_mx, _ = self.lm.get_rope_index(mx.array(p.input_ids[None, :]), grid)
            pos = np.array(pos_mx)
            # text only: (1, n), the same position on all three axes; with an image (3, 1, n)
            pos = np.broadcast_to(pos, (3, n)) if pos.ndim == 2 else pos[:, 0, :]
            full = np.empty((3, L), dtype=np.int32)
            full[:, :n] = pos
            if L > n:
                start = int(pos.max()) + 1
                full[:, n:] = np.arange(start, start + L - n, dtype=np.int32)
            rows.append(full)
        return mx.array(np.stack(rows, axis=1))
