"""Llama-Nemotron-Embed-VL: pooled text AND image vectors in one space (one vector per input).

The reference is NVIDIA's implementation in NeMo Automodel 0.7.0 (the hub's remote code is the
same model; ``LlamaNemotronVLProcessor`` + ``LlamaNemotronVLModel.encode_queries`` /
``encode_documents``). Texts: ``"<query_prefix> <text>"`` for queries, ``"<passage_prefix>
<text>"`` for documents (``query:`` / ``passage:``), BOS first. Images are documents:
``"passage: <img><IMG_CONTEXT>×(tokens per tile × tiles)</img> "``, the image cut into up to
``max_input_tiles`` square tiles on the grid whose aspect ratio and area fit best, plus a
thumbnail of the whole image when there is more than one tile. The processor is transformers'
torchvision backend: the uint8 image is resized by torch's antialiased bicubic kernel
(``interpolate(mode="bicubic", antialias=True)`` on uint8, PIL-SIMD's fixed-point algorithm with
int16 weights; reproduced bit for bit by ``torch_bicubic_aa_uint8``; PIL's own resize differs
by up to 16 levels at sharp edges), then ``(x - 127.5) / 127.5`` in float32, then cast to
bfloat16: the pixels the model sees are bfloat16-rounded (we round them too and compute in the
model dtype). SigLIP vision tower (last hidden state after ``post_layernorm``, the pooling head
unused), pixel shuffle 0.5, ``mlp1`` projector, features written over the ``<IMG_CONTEXT>``
tokens, a bidirectional Llama (padding mask only), mean pooling over real tokens (config
``pooling``: ``avg``, or ``last``), L2-normalised (the reference returns the pooled vector;
cosine is unchanged).

The forward is ours on mlx-embeddings' modules: its ``Model.__call__`` writes the image
features at the image tokens' COLUMN indices of every row (``np.where(...)[1]``), which breaks
any batch with an image whose rows differ, and feeds the vision tower unrounded pixels.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
from app.engine.cpu_patch import install_cpu_kernels, warm_up
from app.engine.loading import apply_dtype, dtype_name, load_mlx_model, weights_fingerprint
from app.engine.multivector import l2_normalized, merge_image_features, right_padded
from app.engine.pooled import load_tokenizer
from app.errors import InputTooLong, InvalidRequest, UnsupportedInput
from app.settings import Settings

log = logging.getLogger(__name__)

IMG_START, IMG_END, IMG_CONTEXT = "<img>", "</img>", "<IMG_CONTEXT>"
SIGLIP_MEAN_STD = 0.5
POOLINGS = ("avg", "last")


# ---- the processor's image path, without torch -------------------------------------------------
def _bicubic_aa_filter(x: float) -> float:
    """Keys' cubic with a = -0.5 (PIL's and torch's antialiased bicubic)."""
    x = abs(x)
    a = -0.5
    if x < 1.0:
        return ((a + 2) * x - (a + 3)) * x * x + 1
    if x < 2.0:
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return 0.0


def _aa_int16_weights(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Per output pixel: first input index and int16 fixed-point weights (0 past the window),
    and the weights' precision in bits, as torch's ``_compute_index_ranges_int16_weights``
    (align_corners False, no explicit scale) computes them."""
    scale = in_size / out_size
    support = 2.0 * scale if scale >= 1.0 else 2.0
    width = int(math.ceil(support)) * 2 + 1
    invscale = 1.0 / scale if scale >= 1.0 else 1.0
    starts = np.zeros(out_size, dtype=np.int64)
    w = np.zeros((out_size, width), dtype=np.float64)
    w_max = 0.0
    for i in range(out_size):
        center = scale * (i + 0.5)
        lo = max(int(center - support + 0.5), 0)
        n = min(max(min(int(center + support + 0.5), in_size) - lo, 0), width)
        row = [_bicubic_aa_filter((j + lo - center + 0.5) * invscale) for j in range(n)]
        total = sum(row)
        if total != 0.0:
            row = [v / total for v in row]
            w_max = max([w_max, *row])
        w[i, :n] = row
        starts[i] = lo
    precision = 0
    while precision < 22 and int(0.5 + w_max * (1 << (precision + 1))) < (1 << 15):
        precision += 1
    v = w * (1 << precision)
    k = np.where(v < 0, np.trunc(v - 0.5), np.trunc(v + 0.5)).astype(np.int32)
    return starts, k, precision


def _aa_pass(x: np.ndarray, axis: int, out_size: int) -> np.ndarray:
    """One separable pass over ``axis`` of an (H, W, C) uint8-valued int32 array: integer
    multiply-accumulate, rounding bias, arithmetic shift, saturation to 0..255."""
    in_size = x.shape[axis]
    starts, k, precision = _aa_int16_weights(in_size, out_size)
    x = np.ascontiguousarray(np.moveaxis(x, axis, 0))
    acc = np.full((out_size, *x.shape[1:]), 1 << (precision - 1), dtype=np.int32)
    extra = (1,) * (x.ndim - 1)
    for j in range(k.shape[1]):
        idx = np.minimum(starts + j, in_size - 1)  # weight 0 where the window is shorter
        acc += np.take(x, idx, axis=0) * k[:, j].reshape(-1, *extra)
    np.right_shift(acc, precision, out=acc)
    np.clip(acc, 0, 255, out=acc)
    return np.ascontiguousarray(np.moveaxis(acc, 0, axis))


def torch_bicubic_aa_uint8(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W, C) uint8 resized exactly as ``torch.nn.functional.interpolate(uint8 (1, C, H, W),
    mode="bicubic", align_corners=False, antialias=True)`` on CPU (what torchvision's ``resize``
    calls for uint8 bicubic): horizontal pass, then vertical, each clipped to uint8."""
    x = image.astype(np.int32)
    if x.shape[1] != width:
        x = _aa_pass(x, 1, width)
    if x.shape[0] != height:
        x = _aa_pass(x, 0, height)
    return x.astype(np.uint8)


def tile_grid(width: int, height: int, tile: int, max_tiles: int) -> tuple[int, int]:
    """(columns, rows) of the tiling: among grids of 1..max_tiles tiles (in order of tile
    count), the first with the best min(area ratio, 0.6) x aspect-ratio match."""
    aspect = width / height
    grids = sorted(
        {
            (i, j)
            for n in range(1, max_tiles + 1)
            for i in range(1, n + 1)
            for j in range(1, n + 1)
            if 1 <= i * j <= max_tiles
        },
        key=lambda g: g[0] * g[1],
    )
    best, best_score = (1, 1), float("-inf")
    for cols, rows in grids:
        target = cols / rows
        area_ratio = cols * rows * tile * tile / (width * height)
        score = min(area_ratio, 0.6) * min(target / aspect, aspect / target)
        if score > best_score:
            best, best_score = (cols, rows), score
    return best


def bfloat16_rounded(x: np.ndarray) -> np.ndarray:
    """float32 values rounded to bfloat16 (round to nearest even), as float32."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = (bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) & np.uint32(
        0xFFFF0000
    )
    return rounded.view(np.float32)


def nemotron_tiles(
    image: Image.Image, tile: int, max_tiles: int, thumbnail: bool, dynamic: bool = True
) -> np.ndarray:
    """(tiles, tile, tile, 3) float32 pixels as the reference processor makes them (NHWC)."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)
    h, w = rgb.shape[:2]
    if dynamic:
        cols, rows = tile_grid(w, h, tile, max_tiles)
        resized = torch_bicubic_aa_uint8(rgb, rows * tile, cols * tile)
        tiles = [
            resized[r : r + tile, c : c + tile]
            for r in range(0, rows * tile, tile)
            for c in range(0, cols * tile, tile)
        ]
        if thumbnail and len(tiles) != 1:
            tiles.append(torch_bicubic_aa_uint8(rgb, tile, tile))
    else:
        tiles = [torch_bicubic_aa_uint8(rgb, tile, tile)]
    x = np.stack(tiles).astype(np.float32)
    # torchvision's fused rescale + normalise: mean and std scaled by 255, in float32
    mean = np.float32(SIGLIP_MEAN_STD * 255.0)
    x = (x - mean) / mean
    return bfloat16_rounded(x)


@dataclass
class NemotronVLPayload:
    input_ids: np.ndarray  # (n,) int32
    pixel_values: np.ndarray | None = None  # (tiles, S, S, 3) float32 (bfloat16 values)


class NemotronVLAdapter:
    def __init__(self, path: Path, settings: Settings) -> None:
        config = json.loads((path / "config.json").read_text())
        proc_file = path / "processor_config.json"
        proc: dict[str, Any] = json.loads(proc_file.read_text()) if proc_file.exists() else {}
        self.pooling = str(config.get("pooling", "avg"))
        if self.pooling not in POOLINGS:
            raise ValueError(f"{path}: pooling {self.pooling!r} is not one of {POOLINGS}")
        if int(config.get("select_layer", -1)) != -1:
            raise ValueError(f"{path}: only select_layer -1 (the last vision layer) is supported")
        if proc.get("norm_type", "siglip") != "siglip":
            raise ValueError(f"{path}: only the siglip image normalisation is supported")
        if proc.get("system_message"):
            raise ValueError(f"{path}: a processor system_message is not supported")
        self.model = load_mlx_model(path)
        self.dtype = apply_dtype(self.model, settings.dtype)
        self.cpu_kernels = install_cpu_kernels(self.model, settings.cpu_kernels)
        self.tokenizer = load_tokenizer(path)
        vision = config["vision_config"]
        # LlamaNemotronVLProcessor's own defaults where processor_config.json is silent (the
        # reference builds the processor from that file; config.json's copies are not read)
        self.tile = int(proc.get("image_size", 512))
        if self.tile != int(config.get("force_image_size") or vision["image_size"]):
            raise ValueError(f"{path}: the processor's image_size differs from the vision tower's")
        per_tile = int(
            (self.tile // int(vision["patch_size"])) ** 2 * config["downsample_ratio"] ** 2
        )
        self.tokens_per_tile = int(proc.get("num_image_token", per_tile))
        if self.tokens_per_tile != per_tile:
            raise ValueError(f"{path}: num_image_token {self.tokens_per_tile} != {per_tile}")
        self.max_tiles = int(proc.get("max_input_tiles", 6))
        self.thumbnail = bool(proc.get("use_thumbnail", True))
        self.dynamic = bool(proc.get("dynamic_image_size", True))
        self.image_token_id = int(config["img_context_token_id"])
        if self.tokenizer.convert_tokens_to_ids(IMG_CONTEXT) != self.image_token_id:
            raise ValueError(f"{path}: {IMG_CONTEXT} is not img_context_token_id")
        pad = self.tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else 0)
        self.prefixes = {
            "query": str(proc.get("query_prefix", "query:")),
            "document": str(proc.get("passage_prefix", "passage:")),
        }
        model_max = int(self.tokenizer.model_max_length)
        q_max = proc.get("q_max_length") or model_max
        p_max = proc.get("p_max_length") or model_max
        self.max_tokens = min(settings.max_tokens_per_input, int(p_max))
        self.limits = {"query": min(self.max_tokens, int(q_max)), "document": self.max_tokens}
        self.lm = self.model.language_model
        self.vision = self.model.vision_model.vision_model
        max_image_tokens = self.tokens_per_tile * (self.max_tiles + int(self.thumbnail))
        self.info = ModelInfo(
            name=settings.model_name,
            kind="pooled",
            dim=int(config["llm_config"]["hidden_size"]),
            modalities=("text", "image"),
            max_tokens=self.max_tokens,
            fingerprint=weights_fingerprint(settings.model, path)
            + f"|{dtype_name(self.dtype)}|{self.pooling}|nemotron-vl",
            dtype=dtype_name(self.dtype),
            extra={
                "architecture": "llama_nemotron_vl",
                "family": "llama_nemotron_vl",
                "reference": "NeMo Automodel 0.7.0 LlamaNemotronVLModel.encode_queries / "
                "encode_documents (LlamaNemotronVLProcessor: torch bicubic tiles, bfloat16 "
                "pixels)",
                "pooling": "mean" if self.pooling == "avg" else self.pooling,
                "normalized": True,
                # text prefixes (the processor adds a space after them)
                "prompts": {k: f"{v} " for k, v in self.prefixes.items()},
                "default_prompt_name": "query",
                "max_query_tokens": self.limits["query"],
                "image_tile_size": self.tile,
                "max_image_tiles": self.max_tiles,
                "image_thumbnail": self.thumbnail,
                "max_pixels": self.max_tiles * self.tile * self.tile,
                "max_image_tokens": max_image_tokens,
                "fixes": [
                    "image features merged per row (mlx-embeddings writes them at the column "
                    "indices of every row, so batches with images break)",
                    "pixels rounded to bfloat16 as the reference processor casts them",
                ],
            },
        )
        if self.cpu_kernels.startswith("on"):
            warm: list[EngineInput] = [TextInput("warm up")]
            if self.tokens_per_tile + 16 <= self.max_tokens:  # one tile fits
                warm.append(ImageInput(Image.new("RGB", (self.tile, self.tile))))
            warm_up(self, warm)

    # ---- any thread ---------------------------------------------------------------------------
    def _role(self, item: EngineInput) -> str:
        name = getattr(item, "prompt_name", None)
        if name is None:
            return "query"
        if name not in self.prefixes:
            raise InvalidRequest(
                f"model {self.info.name!r} has no prompt {name!r} (its prompts: 'document', "
                "'query')",
                param="prompt_name",
            )
        return name

    def document_prompt(self, text: str, tiles: int | None) -> str:
        """The processor's document string: ``<image> `` before the text when there is an
        image, the passage prefix and a space before that, then the image tokens."""
        content = text if tiles is None else f"<image> {text}"
        prefix = self.prefixes["document"]
        if prefix:
            content = f"{prefix} {content}"
        if tiles is None:
            return content.replace("<image>", "", 1)
        image = IMG_START + IMG_CONTEXT * (self.tokens_per_tile * tiles) + IMG_END
        return content.replace("<image>", image, 1)

    def prepare_image(self, image: Image.Image, text: str = "") -> Prepared:
        pixels = nemotron_tiles(image, self.tile, self.max_tiles, self.thumbnail, self.dynamic)
        ids = list(self.tokenizer(self.document_prompt(text, len(pixels)))["input_ids"])
        if len(ids) > self.max_tokens:
            raise InputTooLong(
                f"this image is {len(ids)} tokens long; the limit for this model is "
                f"{self.max_tokens} tokens (images cannot be truncated)"
            )
        payload = NemotronVLPayload(np.asarray(ids, dtype=np.int32), pixels)
        return Prepared(
            n_tokens=len(ids),
            payload=payload,
            kind="image",
            pixels=int(pixels.shape[0]) * self.tile * self.tile,
        )

    def prepare(self, item: EngineInput, *, truncate: bool = False) -> Prepared:
        if isinstance(item, ImageInput):
            return self.prepare_image(item.image)
        if isinstance(item, TokenInput):
            raise UnsupportedInput(
                f"{self.info.name} embeds texts with its query/passage prefixes: send text, "
                "not token ids"
            )
        if not isinstance(item, TextInput):
            raise UnsupportedInput(f"unsupported input type {type(item).__name__}")
        role = self._role(item)
        if role == "query":
            prefix = self.prefixes["query"]
            prompt = f"{prefix} {item.text}" if prefix else item.text
        else:
            prompt = self.document_prompt(item.text, None)
        ids = list(self.tokenizer(prompt)["input_ids"])
        limit = self.limits[role]
        if len(ids) > limit:
            if not truncate:
                raise InputTooLong(
                    f"this input is {len(ids)} tokens long; the limit for this model is "
                    f'{limit} tokens. Shorten it or send "truncate": true.'
                )
            ids = ids[:limit]  # the processor's truncation=True, max_length (BOS kept)
        return Prepared(
            n_tokens=len(ids), payload=NemotronVLPayload(np.asarray(ids, dtype=np.int32))
        )

    # ---- MLX thread only ------------------------------------------------------------------------
    def image_features(self, pixels: mx.array) -> mx.array:
        """(tiles, tokens per tile, hidden): SigLIP's post-layernorm states (no head), pixel
        shuffle, ``mlp1``."""
        from mlx_embeddings.models.llama_nemotron_vl.model import pixel_shuffle

        x = self.vision.embeddings(pixels)
        x, _ = self.vision.encoder(x=x, mask=None)
        x = self.vision.post_layernorm(x)
        x = pixel_shuffle(x, shuffle_ratio=self.model.downsample_ratio)
        for layer in self.model.mlp1:
            x = layer(x)
        return x

    def forward(self, batch: list[Prepared]) -> list[Embedding]:
        payloads: list[NemotronVLPayload] = [p.payload for p in batch]
        lengths = np.array([len(p.input_ids) for p in payloads])
        ids = right_padded([p.input_ids for p in payloads], self.pad_id)
        B, L = ids.shape
        embeds = self.lm.embed_tokens(mx.array(ids))
        pixels = [p.pixel_values for p in payloads if p.pixel_values is not None]
        if pixels:
            feats = self.image_features(mx.array(np.concatenate(pixels)).astype(embeds.dtype))
            # only rows with an image take features (a text may spell <IMG_CONTEXT>: without
            # pixels the reference embeds it as a token)
            with_image = np.array([p.pixel_values is not None for p in payloads])
            embeds = merge_image_features(
                embeds,
                np.where(with_image[:, None], ids, -1),
                self.image_token_id,
                feats.reshape(-1, feats.shape[-1]),
            )
        real = np.arange(L)[None, :] < lengths[:, None]
        mask = mx.array(real)[:, None, None, :]  # bidirectional: every real key, no causality
        hidden = self.lm(None, mask, input_embeddings=embeds).astype(mx.float32)
        if self.pooling == "last":
            pooled = hidden[mx.arange(B), mx.array(lengths - 1)]
        else:
            m = mx.array(real.astype(np.float32))[..., None]
            pooled = (hidden * m).sum(axis=1) / m.sum(axis=1)
        vecs = l2_normalized(pooled)
        return [
            Embedding(vectors=np.ascontiguousarray(vecs[b]), n_tokens=int(lengths[b]))
            for b in range(B)
        ]
