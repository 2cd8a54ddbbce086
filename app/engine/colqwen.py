"""ColQwen2.5 (multi-vector) adapter: mlx-embeddings' model and weights, our forward.

mlx-embeddings 0.1.0's own ``colqwen2_5`` forward is wrong in three ways that we fix here,
reusing its modules and weights unchanged:
- it calls the language model without M-RoPE 3-D position ids (image tokens get 1-D positions):
  we compute them per item with mlx_vlm's ``get_rope_index``;
- it passes ``mask=None`` (causal only), so real tokens attend to padding in a padded batch:
  we pad on the right and pass a causal + key-padding mask;
- it stacks per-image features, which fails for images of different sizes: we merge the flat
  vision output into the image-token slots in batch order.
"""

from __future__ import annotations

import logging
from pathlib import Path

import mlx.core as mx
import numpy as np
from PIL import Image

from app.engine.base import Embedding, EngineInput, ImageInput, ModelInfo, Prepared, TextInput
from app.engine.colqwen_processor import ColQwenPayload, ColQwenProcessor
from app.engine.cpu_patch import install_cpu_kernels, warm_up
from app.engine.loading import apply_dtype, dtype_name, load_mlx_model, weights_fingerprint
from app.engine.multivector import (
    causal_padding_mask,
    l2_normalized,
    merge_image_features,
    right_padded,
)
from app.errors import MediaError, UnsupportedInput
from app.settings import Settings

log = logging.getLogger(__name__)


class ColQwenAdapter:
    def __init__(self, path: Path, settings: Settings) -> None:
        self.model = load_mlx_model(path)
        self.dtype = apply_dtype(self.model, settings.dtype)
        self.cpu_kernels = install_cpu_kernels(self.model, settings.cpu_kernels)
        vlm = self.model.vlm
        self.lm = vlm.language_model
        self.vision = vlm.vision_tower
        self.image_token_id = int(vlm.config.image_token_id)
        vocab_size = int(self.lm.model.embed_tokens.weight.shape[0])
        self.processor = ColQwenProcessor(
            path,
            image_token_id=self.image_token_id,
            vocab_size=vocab_size,
            query_prefix=settings.query_prefix,
            query_suffix=settings.query_suffix,
            visual_prompt=settings.visual_prompt,
        )
        self.max_tokens = settings.max_tokens_per_input
        dim = int(self.model.embedding_proj_layer.weight.shape[0])
        self.info = ModelInfo(
            name=settings.model_name,
            kind="multi_vector",
            dim=dim,
            modalities=("text", "image"),
            max_tokens=self.max_tokens,
            fingerprint=weights_fingerprint(settings.model, path)
            + "|"
            + "|".join(
                [
                    dtype_name(self.dtype),
                    self.processor.query_prefix,
                    self.processor.query_suffix,
                    self.processor.visual_prompt,
                ]
            ),
            dtype=dtype_name(self.dtype),
            extra={
                "architecture": "colqwen2_5",
                "family": "colqwen2_5",
                "min_pixels": self.processor.min_pixels,
                "max_pixels": self.processor.max_pixels,
                "max_image_tokens": self.processor.max_image_tokens,
                "query_prefix": self.processor.query_prefix,
                "query_suffix": self.processor.query_suffix,
                "visual_prompt": self.processor.visual_prompt,
                # text: query (prefix + text + suffix) by default, or document (plain text);
                # images are always documents (the visual prompt)
                "prompts": {"query": self.processor.query_prefix, "document": ""},
                "default_prompt_name": "query",
            },
        )
        if self.cpu_kernels.startswith("on"):
            warm_up(self, [TextInput("warm up"), ImageInput(Image.new("RGB", (56, 56)))])

    # ---- any thread: validate + preprocess -----------------------------------------------------
    def prepare(self, item: EngineInput, *, truncate: bool = False) -> Prepared:
        if isinstance(item, ImageInput):
            payload = self.processor.image_payload(item.image)
            n_pix = int(payload.pixel_values.shape[0]) * self.processor.patch_size**2
            return Prepared(
                n_tokens=len(payload.input_ids), payload=payload, kind="image", pixels=n_pix
            )
        # text is a query unless the request asked for a document (then: no prompt, as
        # colpali-engine's process_texts)
        document = getattr(item, "prompt_name", None) == "document"
        if isinstance(item, TextInput):
            text_ids = self.processor.document_text_ids if document else self.processor.query_ids
            ids = text_ids(item.text, max_tokens=self.max_tokens, truncate=truncate, param=None)
        elif hasattr(item, "ids"):
            token_ids = (
                self.processor.document_token_ids if document else self.processor.token_query_ids
            )
            ids = token_ids(item.ids, max_tokens=self.max_tokens, truncate=truncate, param=None)
        else:
            raise UnsupportedInput(f"unsupported input type {type(item).__name__}")
        payload = ColQwenPayload(input_ids=np.asarray(ids, dtype=np.int32))
        return Prepared(n_tokens=len(ids), payload=payload, kind="text")

    def measure(self, item: EngineInput, *, truncate: bool = False) -> Prepared:
        """``prepare`` for text; for an image only its token count (payload None)."""
        if not isinstance(item, ImageInput):
            return self.prepare(item, truncate=truncate)
        w, h = item.image.size
        try:
            n_tokens = self.processor.image_token_count(w, h)
        except ValueError as exc:  # e.g. an aspect ratio over 200
            raise MediaError(f"this image cannot be embedded: {exc}") from None
        return Prepared(n_tokens=n_tokens, payload=None, kind="image", pixels=w * h)

    # ---- MLX thread only ------------------------------------------------------------------------
    def forward(self, batch: list[Prepared]) -> list[Embedding]:
        payloads: list[ColQwenPayload] = [p.payload for p in batch]
        lengths = [len(p.input_ids) for p in payloads]
        ids = right_padded([p.input_ids for p in payloads], self.processor.pad_id)
        L = ids.shape[1]
        input_ids = mx.array(ids)
        embeds = self.lm.model.embed_tokens(input_ids)

        images = [p for p in payloads if p.pixel_values is not None]
        if images:
            pixels = mx.array(np.concatenate([p.pixel_values for p in images], axis=0))
            grids = mx.array(np.array([p.grid_thw for p in images], dtype=np.int32))
            feats = self.vision(pixels.astype(embeds.dtype), grids, output_hidden_states=False)
            embeds = merge_image_features(embeds, ids, self.image_token_id, feats)

        positions = self._positions(payloads, L)
        mask = causal_padding_mask(np.arange(L)[None, :] < np.array(lengths)[:, None])
        hidden = self.lm.model(None, inputs_embeds=embeds, mask=mask, position_ids=positions)
        out = l2_normalized(self.model.embedding_proj_layer(hidden))

        results = []
        for b, p in enumerate(payloads):
            extras = {}
            if p.grid_thw is not None:
                t, h, w = p.grid_thw
                m, px = self.processor.merge_size, self.processor.patch_size
                extras = {
                    "image_grid": [h // m, w // m],
                    "image_token_span": list(p.image_span),
                    # [width, height] the model saw: the image after smart_resize
                    "image_size": [w * px, h * px],
                }
            vec = np.ascontiguousarray(out[b, : lengths[b]], dtype=np.float32)
            results.append(Embedding(vectors=vec, n_tokens=lengths[b], extras=extras))
        return results

    def _positions(self, payloads: list[ColQwenPayload], L: int) -> mx.array:
        """(3, B, L) M-RoPE positions, each item computed alone (padding gets trailing values)."""
        rows = []
        for p in payloads:
            n = len(p.input_ids)
            if p.grid_thw is None:
                pos = np.broadcast_to(np.arange(n, dtype=np.int32), (3, n))
            else:
                pos_mx, _ = self.lm.get_rope_index(
                    mx.array(p.input_ids[None, :]),
                    image_grid_thw=mx.array(np.array([p.grid_thw], dtype=np.int32)),
                )
                pos = np.array(pos_mx)[:, 0, :]
            full = np.empty((3, L), dtype=np.int32)
            full[:, :n] = pos
            if L > n:
                start = int(pos.max()) + 1 if n else 0
                full[:, n:] = np.arange(start, start + L - n, dtype=np.int32)
            rows.append(full)
        return mx.array(np.stack(rows, axis=1))
