"""ColIdefics3 (ColSmolVLM: vidore/colSmol-256M, -500M) multi-vector adapter.

The reference is colpali-engine 0.3.18's ``ColIdefics3`` + ``ColIdefics3Processor``: queries are
the text followed by 10 ``<end_of_utterance>`` augmentation tokens, documents as text are the
plain text, images use the visual prompt
``<|im_start|>User:<image>Describe the image.<end_of_utterance>\\nAssistant:`` expanded by
transformers' ``Idefics3Processor`` (tiles of ``max_image_size`` plus the global image, each
``image_seq_len`` ``<image>`` tokens) with the torch-free PIL Idefics3 image processor; then
Idefics3 (SigLIP vision, pixel-shuffle connector, Llama text model), the 128-d ``linear``
projection and per-token L2 normalisation.

mlx-embeddings 0.1.0's own ``colidefics3`` module cannot be imported with the mlx-vlm it runs
with (``mlx_vlm.trainer.utils.get_module_by_name`` is gone in mlx-vlm 0.7), so the model is
mlx-vlm's Idefics3 modules plus the projection, built here; its language model is called with a
causal + padding mask (mlx-embeddings passed none: causal only), and its vision encoder with the
patch mask when a frame is padded (mlx-vlm passes none).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten
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
from app.engine.loading import apply_dtype, dtype_name, weights_fingerprint
from app.engine.multivector import (
    causal_padding_mask,
    l2_normalized,
    merge_image_features,
    right_padded,
)
from app.errors import InputTooLong, InvalidRequest, InvalidTokenIds, UnsupportedInput
from app.settings import Settings
from app.token_ids import out_of_vocab_message

log = logging.getLogger(__name__)

QUERY_SUFFIX = "<end_of_utterance>" * 10
VISUAL_PROMPT = "<|im_start|>User:<image>Describe the image.<end_of_utterance>\nAssistant:"


def is_colidefics3(config: dict[str, Any]) -> bool:
    """mlx conversions say ``colidefics3``; colpali-engine's checkpoints say ``idefics3`` with
    the ``ColIdefics3`` architecture."""
    return config.get("model_type") == "colidefics3" or (
        config.get("model_type") == "idefics3" and "ColIdefics3" in config.get("architectures", [])
    )


def build_model(config: dict[str, Any]) -> nn.Module:
    """mlx-vlm's Idefics3 (vision_model, connector, language_model without lm_head) + linear."""
    from mlx_vlm.models.idefics3 import Model as Idefics3
    from mlx_vlm.models.idefics3 import ModelConfig, TextConfig, VisionConfig

    class ColIdefics3(Idefics3):
        def __init__(self, cfg: ModelConfig, dim: int) -> None:
            super().__init__(cfg)
            self.language_model.lm_head = None
            self.linear = nn.Linear(cfg.text_config.hidden_size, dim)

    cfg = ModelConfig.from_dict({**config, "model_type": "idefics3"})
    cfg.text_config = TextConfig.from_dict(config["text_config"])
    cfg.vision_config = VisionConfig.from_dict(config["vision_config"])
    return ColIdefics3(cfg, int(config.get("embedding_dim", 128)))


def load_weights(model: nn.Module, path: Path) -> None:
    """colpali-engine's names (``model.vision_model.*``, ``model.text_model.*``, ``linear.*``)
    or mlx names, through mlx-vlm's sanitizers; strict: every parameter from the files."""
    from mlx_vlm.models.idefics3 import LanguageModel, VisionModel

    weights: dict[str, mx.array] = {}
    for f in sorted(path.glob("*.safetensors")):
        weights.update(mx.load(str(f)))
    if not weights:
        raise FileNotFoundError(f"no safetensors in {path}")
    weights = model.sanitize(weights)
    weights = VisionModel.sanitize(model.vision_model, weights)
    weights = LanguageModel.sanitize(model.language_model, weights)
    weights = {k: v for k, v in weights.items() if not k.startswith("language_model.lm_head")}
    expected = {k for k, _ in tree_flatten(model.parameters())}
    missing, extra = expected - set(weights), set(weights) - expected
    if missing or extra:
        raise ValueError(
            f"ColIdefics3 weights do not match: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(extra)[:5]}"
        )
    model.load_weights(list(weights.items()), strict=True)
    mx.eval(model.parameters())


@dataclass
class ColIdefics3Payload:
    input_ids: np.ndarray  # (n,) int32
    pixel_values: np.ndarray | None = None  # (frames, H, W, C) float32, channels last
    pixel_mask: np.ndarray | None = None  # (frames, H, W) bool


class ColIdefics3Adapter:
    def __init__(self, path: Path, settings: Settings) -> None:
        _quiet_transformers()
        from transformers import AutoTokenizer, Idefics3Processor
        from transformers.models.idefics3.image_processing_pil_idefics3 import (
            Idefics3ImageProcessorPil,
        )

        config = json.loads((path / "config.json").read_text())
        self.model = build_model(config)
        load_weights(self.model, path)
        self.dtype = apply_dtype(self.model, settings.dtype)
        self.cpu_kernels = install_cpu_kernels(self.model, settings.cpu_kernels)
        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        pre = json.loads((path / "preprocessor_config.json").read_text())
        image_processor = Idefics3ImageProcessorPil(
            **{k: v for k, v in pre.items() if k not in ("image_processor_type", "processor_class")}
        )
        proc_file = path / "processor_config.json"
        proc_cfg = json.loads(proc_file.read_text()) if proc_file.exists() else {}
        vision = config["vision_config"]
        scale = int(config.get("scale_factor", 2))
        default_seq = (int(vision["image_size"]) // int(vision["patch_size"])) ** 2 // scale**2
        self.image_seq_len = int(proc_cfg.get("image_seq_len", default_seq))
        self.processor = Idefics3Processor(
            image_processor=image_processor,
            tokenizer=self.tokenizer,
            image_seq_len=self.image_seq_len,
        )
        self.image_token_id = int(config["image_token_id"])
        self.vocab_size = int(config["text_config"]["vocab_size"])
        pad = self.tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else 0)
        self.patch_size = int(vision["patch_size"])
        self.tile = int(image_processor.max_image_size["longest_edge"])
        self.longest_edge = int(image_processor.size["longest_edge"])
        self.max_tokens = settings.max_tokens_per_input
        self.suffix_ids = list(self.tokenizer(QUERY_SUFFIX, add_special_tokens=False)["input_ids"])
        dim = int(self.model.linear.weight.shape[0])
        tiles = (self.longest_edge // self.tile) ** 2 + 1 if self.longest_edge > self.tile else 1
        self.info = ModelInfo(
            name=settings.model_name,
            kind="multi_vector",
            dim=dim,
            modalities=("text", "image"),
            max_tokens=self.max_tokens,
            fingerprint=weights_fingerprint(settings.model, path)
            + f"|{dtype_name(self.dtype)}|colidefics3-0.3.18",
            dtype=dtype_name(self.dtype),
            extra={
                "architecture": "colidefics3",
                "family": "colidefics3",
                "reference": "colpali-engine 0.3.18 ColIdefics3 + ColIdefics3Processor",
                # the image is resized to this longest edge, then cut into tiles
                "max_pixels": self.longest_edge**2,
                "image_longest_edge": self.longest_edge,
                "image_tile_size": self.tile,
                "max_image_tokens": tiles * self.image_seq_len,
                "query_suffix": QUERY_SUFFIX,
                "visual_prompt": VISUAL_PROMPT,
                # text: query (text + augmentation) by default, or document (plain text);
                # images are always documents
                "prompts": {"query": "", "document": ""},
                "default_prompt_name": "query",
                "fixes": [
                    "model built from mlx-vlm's Idefics3 (mlx-embeddings' colidefics3 does not "
                    "import with mlx-vlm 0.7)",
                    "causal + padding mask in the language model (mlx-embeddings: causal only)",
                ],
            },
        )
        if self.cpu_kernels.startswith("on"):
            warm_up(self, [TextInput("warm up"), ImageInput(Image.new("RGB", (40, 24)))])

    # ---- any thread ---------------------------------------------------------------------------
    def _text_ids(self, item: TextInput | TokenInput, truncate: bool) -> list[int]:
        name = item.prompt_name or "query"
        if name not in ("query", "document"):
            raise InvalidRequest(
                f"model {self.info.name!r} has no prompt {name!r} (its prompts: 'document', "
                "'query')",
                param="prompt_name",
            )
        suffix = self.suffix_ids if name == "query" else []
        if isinstance(item, TextInput):
            # colpali tokenizes text + suffix in one go; the suffix tokens are added tokens,
            # so the text part tokenizes alone
            body = list(self.tokenizer(item.text)["input_ids"])
        else:
            bad = [i for i in item.ids if not 0 <= i < self.vocab_size]
            if bad:
                raise InvalidTokenIds(out_of_vocab_message(self.vocab_size, bad))
            body = list(item.ids)
        if len(body) + len(suffix) > self.max_tokens:
            if not truncate:
                raise InputTooLong(
                    f"this input is {len(body) + len(suffix)} tokens long; the limit for this "
                    f'model is {self.max_tokens} tokens. Shorten it or send "truncate": true.'
                )
            body = body[: max(self.max_tokens - len(suffix), 0)]
        return body + suffix

    def prepare(self, item: EngineInput, *, truncate: bool = False) -> Prepared:
        if isinstance(item, ImageInput):
            out = self.processor(
                text=[VISUAL_PROMPT], images=[[item.image.convert("RGB")]], return_tensors="np"
            )
            ids = np.asarray(out["input_ids"][0], dtype=np.int32)
            pixels = np.asarray(out["pixel_values"][0], dtype=np.float32).transpose(0, 2, 3, 1)
            mask = np.asarray(out["pixel_attention_mask"][0], dtype=bool)
            payload = ColIdefics3Payload(input_ids=ids, pixel_values=pixels, pixel_mask=mask)
            n_pix = int(mask.sum())
            return Prepared(n_tokens=len(ids), payload=payload, kind="image", pixels=n_pix)
        if not isinstance(item, TextInput | TokenInput):
            raise UnsupportedInput(f"unsupported input type {type(item).__name__}")
        ids = self._text_ids(item, truncate)
        payload = ColIdefics3Payload(input_ids=np.asarray(ids, dtype=np.int32))
        return Prepared(n_tokens=len(ids), payload=payload, kind="text")

    # ---- MLX thread only ------------------------------------------------------------------------
    def _image_features(self, p: ColIdefics3Payload, dtype: mx.Dtype) -> mx.array:
        """Vision tower + connector for one item's frames -> (frames * image_seq_len, hidden)."""
        vision = self.model.vision_model
        pixels = mx.array(p.pixel_values).astype(dtype)
        n, h, w, _ = pixels.shape
        ps = self.patch_size
        patch_mask = p.pixel_mask[:, : h // ps * ps, : w // ps * ps]
        patch_mask = patch_mask.reshape(n, h // ps, ps, w // ps, ps).any(axis=(2, 4))
        x = vision.embeddings(pixels, mx.array(patch_mask))
        x = x.astype(vision.embeddings.patch_embedding.weight.dtype)
        mask = None
        if not patch_mask.all():  # transformers masks padded patches out of the attention
            keys = mx.array(patch_mask.reshape(n, -1))
            mask = keys[:, None, None, :]
        for layer in vision.encoder.layers:
            x = layer(x, mask=mask)
        feats = self.model.connector(vision.post_layernorm(x))
        return feats.reshape(-1, feats.shape[-1])

    def forward(self, batch: list[Prepared]) -> list[Embedding]:
        payloads: list[ColIdefics3Payload] = [p.payload for p in batch]
        lengths = [len(p.input_ids) for p in payloads]
        ids = right_padded([p.input_ids for p in payloads], self.pad_id)
        lm = self.model.language_model
        embeds = lm.embed_tokens(mx.array(ids))
        images = [p for p in payloads if p.pixel_values is not None]
        if images:
            feats = mx.concatenate([self._image_features(p, embeds.dtype) for p in images])
            embeds = merge_image_features(embeds, ids, self.image_token_id, feats)
        mask = causal_padding_mask(np.arange(ids.shape[1])[None, :] < np.array(lengths)[:, None])
        h = embeds
        for layer in lm.layers:
            h = layer(h, mask, None)
        out = l2_normalized(self.model.linear(lm.norm(h)))
        return [
            Embedding(
                vectors=np.ascontiguousarray(out[b, : lengths[b]], dtype=np.float32),
                n_tokens=lengths[b],
            )
            for b in range(len(payloads))
        ]
