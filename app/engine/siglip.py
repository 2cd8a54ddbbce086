"""SigLIP: pooled text AND image vectors in one space (one vector per input).

Text follows SigLIP's training-time convention: padded with the pad token to the text model's
``max_position_embeddings`` (64 in the published models) and run WITHOUT an attention mask; the
vector is the head over the last position. (transformers 5's tokenizer can return an attention
mask, and mlx-embeddings 0.1.0 would add an int 0/1 mask to the attention scores; neither is
what SigLIP was trained with.) Images: transformers' PIL SiglipImageProcessor (resize to the
model's square size, rescale, normalise), then the attention-pooling head. Vectors are
L2-normalised. mlx-embeddings 0.1.0 loads SigLIP only if the repo name carries
``patch<P>-<S>``; the adapter passes such a name built from config.json.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np

from app.engine.base import (
    Embedding,
    EngineInput,
    ImageInput,
    ModelInfo,
    Prepared,
    TextInput,
    TokenInput,
)
from app.engine.loading import apply_dtype, dtype_name, load_mlx_model, weights_fingerprint
from app.engine.prompts import read_st_prompts
from app.errors import InputTooLong, InvalidRequest, InvalidTokenIds, UnsupportedInput
from app.settings import Settings

log = logging.getLogger(__name__)


def siglip_repo_name(path: Path, config: dict[str, Any]) -> str:
    """A name mlx-embeddings' regex reads the right patch and image size from."""
    vision = config.get("vision_config", {})
    return (
        f"{path.name}-patch{int(vision.get('patch_size', 16))}-{int(vision.get('image_size', 224))}"
    )


def make_siglip_image_processor(path: Path) -> Any:
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    cfg = json.loads((path / "preprocessor_config.json").read_text())
    accepted = set(inspect.signature(SiglipImageProcessorPil.__init__).parameters)
    kwargs = {
        k: v
        for k, v in cfg.items()
        if not k.startswith("_") and k not in ("image_processor_type", "processor_class")
    }
    if "kwargs" not in accepted:
        kwargs = {k: v for k, v in kwargs.items() if k in accepted}
    return SiglipImageProcessorPil(**kwargs)


class SiglipAdapter:
    def __init__(self, path: Path, settings: Settings) -> None:
        from transformers import AutoTokenizer

        config = json.loads((path / "config.json").read_text())
        self.model = load_mlx_model(path, repo_name=siglip_repo_name(path, config))
        self.dtype = apply_dtype(self.model, settings.dtype)
        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        self.image_processor = make_siglip_image_processor(path)
        text = self.model.config.text_config
        vision = self.model.config.vision_config
        self.text_length = int(text.max_position_embeddings)
        self.max_tokens = min(self.text_length, settings.max_tokens_per_input)
        self.vocab_size = int(text.vocab_size)
        self.pad_id = int(self.tokenizer.pad_token_id)
        self.eos_id = self.tokenizer.eos_token_id
        self.image_size = int(vision.image_size)
        self.n_patches = (self.image_size // int(vision.patch_size)) ** 2
        self.prompts, self.default_prompt_name = read_st_prompts(path)
        dim = int(self.model.text_model.text_model.head.weight.shape[0])
        prompts_digest = hashlib.sha256(
            json.dumps(self.prompts, sort_keys=True).encode()
        ).hexdigest()[:12]
        self.info = ModelInfo(
            name=settings.model_name,
            kind="pooled",
            dim=dim,
            modalities=("text", "image"),
            max_tokens=self.max_tokens,
            fingerprint=weights_fingerprint(settings.model, path)
            + f"|{dtype_name(self.dtype)}|siglip-unmasked|{prompts_digest}",
            dtype=dtype_name(self.dtype),
            extra={
                "architecture": "siglip",
                "family": "siglip",
                "reference": "transformers SiglipModel (text padded to max_length, no mask)",
                "pooling": "head",
                "normalized": True,
                "prompts": dict(self.prompts),
                "default_prompt_name": self.default_prompt_name,
                "matryoshka": False,
                "min_pixels": self.image_size**2,
                "max_pixels": self.image_size**2,
                "max_image_tokens": self.n_patches,
                "image_size": self.image_size,
            },
        )

    # ---- any thread ------------------------------------------------------------------------
    def prepare(self, item: EngineInput, *, truncate: bool = False) -> Prepared:
        if isinstance(item, ImageInput):
            out = self.image_processor([item.image.convert("RGB")], return_tensors="np")
            pixels = np.asarray(out["pixel_values"][0], dtype=np.float32).transpose(1, 2, 0)
            return Prepared(
                n_tokens=self.n_patches, payload=pixels, kind="image", pixels=self.image_size**2
            )
        prompt = self._prompt(getattr(item, "prompt_name", None))
        if isinstance(item, TextInput):
            ids = list(self.tokenizer(prompt + item.text)["input_ids"])
        elif isinstance(item, TokenInput):
            bad = [i for i in item.ids if not 0 <= i < self.vocab_size]
            if bad:
                raise InvalidTokenIds(f"token ids must be in [0, {self.vocab_size}); got {bad[:5]}")
            prompt_ids = (
                list(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])
                if prompt
                else []
            )
            ids = prompt_ids + list(item.ids)
            if self.eos_id is not None and (not ids or ids[-1] != self.eos_id):
                ids.append(self.eos_id)
        else:
            raise UnsupportedInput(f"unsupported input type {type(item).__name__}")
        if len(ids) > self.max_tokens:
            if not truncate:
                raise InputTooLong(
                    f"this input is {len(ids)} tokens long; the limit for this model is "
                    f'{self.max_tokens} tokens. Shorten it or send "truncate": true.'
                )
            # as the tokenizer's truncation: the text is cut, the closing </s> kept
            tail = [self.eos_id] if self.eos_id is not None and ids[-1] == self.eos_id else []
            ids = ids[: self.max_tokens - len(tail)] + tail
        n_real = len(ids)
        padded = ids + [self.pad_id] * (self.text_length - len(ids))
        return Prepared(n_tokens=n_real, payload=np.asarray(padded, dtype=np.int32), kind="text")

    def _prompt(self, name: str | None) -> str:
        if name is None:
            return ""
        if name not in self.prompts:
            raise InvalidRequest(
                f"model {self.info.name!r} has no prompt {name!r}", param="prompt_name"
            )
        return self.prompts[name]

    # ---- MLX thread ------------------------------------------------------------------------
    def forward(self, batch: list[Prepared]) -> list[Embedding]:
        out: list[np.ndarray | None] = [None] * len(batch)
        texts = [i for i, p in enumerate(batch) if p.kind == "text"]
        images = [i for i, p in enumerate(batch) if p.kind == "image"]
        if texts:
            ids = mx.array(np.stack([batch[i].payload for i in texts]))
            feats = self._normalized(self.model.get_text_features(input_ids=ids))
            for row, i in enumerate(texts):
                out[i] = feats[row]
        if images:
            pixels = mx.array(np.stack([batch[i].payload for i in images]))
            feats = self._normalized(self.model.get_image_features(pixel_values=pixels))
            for row, i in enumerate(images):
                out[i] = feats[row]
        return [
            Embedding(vectors=np.ascontiguousarray(v, dtype=np.float32), n_tokens=p.n_tokens)
            for v, p in zip(out, batch, strict=True)
        ]

    @staticmethod
    def _normalized(x: mx.array) -> np.ndarray:
        x = x.astype(mx.float32)
        return np.array(x / mx.maximum(mx.linalg.norm(x, axis=-1, keepdims=True), 1e-12))
