"""Write tiny random models in the on-disk layout of the published MLX embedding models.

Usage::

    uv run python scripts/make_tiny_models.py DIR [--processor-layout {preprocessor,processor}]

Writes these model directories under ``DIR``:

* ``tiny-colqwen2.5/``: the layout of ``qnguyen3/colqwen2.5-v0.2-mlx`` (``model_type``
  ``colqwen2_5``; Qwen2.5-VL backbone nested as ``vlm_config``; weights named
  ``vlm.model.visual.*`` / ``vlm.model.language_model.*`` / ``embedding_proj_layer.*``; a
  byte-level BPE tokenizer with the Qwen special tokens; a Qwen2-VL image processor config).
* ``tiny-bert/``: the layout of a sentence-transformers BERT model such as all-MiniLM-L6-v2
  (HF BERT weight names, WordPiece tokenizer, ``modules.json`` with mean pooling and Normalize).
* ``tiny-xlm-roberta/`` (BAAI/bge-m3 layout: Unigram tokenizer, CLS pooling),
  ``tiny-modernbert/`` (nomic-ai/modernbert-embed-base: ModernBertModel, transformers-4 keys,
  exact GELU, sliding-window layers, search_query/search_document prompts), ``tiny-qwen3/``
  (Qwen/Qwen3-Embedding-0.6B: left-padding tokenizer appending <|endoftext|>, last-token
  pooling, instruct query prompt), ``tiny-embeddinggemma/`` (google/embeddinggemma-300m:
  Gemma3TextModel, bidirectional sliding-window layers, 2_Dense/3_Dense, its prompts),
  ``tiny-siglip-patch8-32/`` (google/siglip-base-patch16-224: SiglipModel, spiece.model).
* ``tiny-lfm2-colbert/`` (LiquidAI/LFM2-ColBERT-350M: Lfm2Model + pylate ``1_Dense``, ``[Q] `` /
  ``[D] `` prefix tokens), ``tiny-colsmol/`` (vidore/colSmol-256M merged: colpali-engine's
  ColIdefics3 names, Idefics3 image processor), ``tiny-qwen3-vl-embedding/``
  (Qwen/Qwen3-VL-Embedding-2B: Qwen3VLForConditionalGeneration names, deepstack vision, chat
  template), ``tiny-llama-nemotron-vl/`` (nvidia/llama-nemotron-embed-vl-1b-v2 as NeMo
  Automodel's ``LlamaNemotronVLModel`` names it: SigLIP vision, ``mlp1`` projector,
  ``LlamaBidirectionalModel``; ``<IMG_CONTEXT>`` tokens; processor_config.json).

Everything is random but deterministic (fixed seeds, numpy generators, in-process tokenizer
training on a built-in corpus), so reruns produce identical files. No torch is needed: the
models are built with mlx-embeddings' own classes and saved with ``mx.save_safetensors``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Literal

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten
from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers
from tokenizers.models import BPE, WordPiece
from tokenizers.processors import TemplateProcessing
from tokenizers.trainers import BpeTrainer

ProcessorLayout = Literal["preprocessor", "processor"]

COLQWEN_DIRNAME = "tiny-colqwen2.5"
BERT_DIRNAME = "tiny-bert"
DEFAULT_SEED = 0

# Qwen2 special tokens in the published order: in Qwen2.5-VL they take ids 151643..151656,
# right after the 151643 byte-level BPE tokens; here they follow the tiny trained vocabulary.
QWEN_SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

# Same regex as transformers' Qwen2Tokenizer (and Qwen's published tokenizer.json).
QWEN_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

QWEN_BPE_VOCAB_SIZE = 1000  # byte-level BPE tokens before the special tokens

# CLIP normalisation constants used by the Qwen2-VL image processor.
CLIP_IMAGE_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_IMAGE_STD = [0.26862954, 0.26130258, 0.27577711]
TINY_MIN_PIXELS = 4 * 28 * 28
TINY_MAX_PIXELS = 64 * 28 * 28

BERT_SPECIAL_TOKENS: tuple[str, ...] = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
BERT_VOCAB_SIZE = 1000

CORPUS = """\
The quick brown fox jumps over the lazy dog. A picture is worth a thousand words, and a page of
text is worth a careful reading. Describe the image. What is shown in this picture? The document
contains a table, a chart and several paragraphs of text. Each page of the report has a title, a
date and a page number at the bottom.

Retrieval systems turn documents and questions into vectors. A query such as "how much did sales
grow in the third quarter" should find the page with the revenue chart, even when the words on
the page are different from the words in the question. Late interaction models keep one vector
for every token and every image patch, and they score a page by matching each query token to
its most similar patch.

The weather today is sunny with a light breeze from the west. Tomorrow there will be clouds in
the morning and rain in the afternoon. The temperature will stay between twelve and eighteen
degrees. Farmers in the valley are happy because the rain will help the young plants grow.

She opened the old book and read the first line aloud. The story began in a small town by the
sea, where a young girl lived with her grandmother in a house with a red door. Every evening
they walked along the harbour and watched the fishing boats come home. The girl dreamed of
sailing to distant islands, of mountains covered in snow and of cities full of lights.

Science is a way of asking questions about the world and testing the answers. A good experiment
changes one thing at a time and measures the result. Researchers write down their methods so
that other people can repeat the work. When the results agree, we become more confident that
the explanation is correct; when they disagree, we learn something new.

Invoice number 4521 was issued on March 3, 2024. The total amount due is 1,250.00 dollars,
payable within thirty days. Please include the invoice number with your payment. For questions
about this bill, contact the accounts department by email or telephone.

The museum opens at nine o'clock and closes at five. Visitors can see paintings, sculptures,
ancient maps and a collection of clocks. Children under twelve enter for free. The cafe on the
second floor serves coffee, tea, sandwiches and cake. Photography without flash is allowed in
most rooms.

Machine learning models learn patterns from examples. A neural network has layers of simple
units; each layer transforms its input and passes the result to the next one. Training adjusts
millions of numbers so that the output matches the desired answer. Attention lets every token
look at every other token and decide which ones matter most.

Cooking a simple soup takes little time. Chop an onion, two carrots and a potato. Warm some oil
in a large pot, add the vegetables and stir for five minutes. Pour in water or stock, add salt
and pepper, and let it simmer for twenty minutes. Serve the soup hot with fresh bread.

The train to the north leaves from platform four at half past seven. Passengers should keep
their tickets until the end of the journey. The journey takes about three hours and the train
stops at six stations. There is a dining car in the middle of the train and free water for all.
"""


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def _write_json(path: Path, obj: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def _corpus_lines() -> list[str]:
    return [line for line in CORPUS.splitlines() if line.strip()]


def _round_up(value: int, multiple: int) -> int:
    return ((value + multiple - 1) // multiple) * multiple


def _draw_param(name: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Draw one O(1)-scale random parameter for the MLX-internal parameter ``name``.

    Linear/conv weights: N(0, gain/sqrt(fan_in)) with gain 2 on the attention query/key
    projections so that attention is clearly non-uniform; norm scales ~1; biases small;
    embeddings N(0, 1).
    """
    leaf = name.rsplit(".", 1)[-1]
    lowered = name.lower()
    is_norm = any(s in lowered for s in ("norm", "ln_q")) and len(shape) == 1
    if len(shape) == 2 and ("embed_tokens" in name or "embeddings.weight" in name):
        return rng.normal(0.0, 1.0, size=shape)
    if is_norm and leaf == "weight":
        return 1.0 + 0.1 * rng.normal(size=shape)
    if leaf == "bias":
        return 0.1 * rng.normal(size=shape)
    if leaf == "weight" and len(shape) >= 2:
        fan_in = int(np.prod(shape[1:]))  # MLX layouts: Linear (out, in), Conv3d (out, ..., in)
        attn_qk = any(s in name for s in ("q_proj", "k_proj", "attn.qkv", ".query.", ".key."))
        gain = 2.0 if attn_qk else 1.0
        return rng.normal(0.0, gain / math.sqrt(fan_in), size=shape)
    raise ValueError(f"don't know how to initialise parameter {name} with shape {shape}")


def _random_parameters(model: Any, seed: int) -> dict[str, mx.array]:
    rng = np.random.default_rng(seed)
    params = dict(tree_flatten(model.parameters()))
    out: dict[str, mx.array] = {}
    for name in sorted(params):
        shape = tuple(params[name].shape)
        out[name] = mx.array(_draw_param(name, shape, rng).astype(np.float32))
    return out


# --------------------------------------------------------------------------------------------
# Tokenizers
# --------------------------------------------------------------------------------------------


def write_qwen_tokenizer(out_dir: Path) -> dict[str, int]:
    """Train a tiny Qwen2-style byte-level BPE tokenizer and write it in the Qwen layout.

    Writes ``tokenizer.json``, ``vocab.json``, ``merges.txt``, ``tokenizer_config.json`` and
    ``special_tokens_map.json`` into ``out_dir``. Returns ``{special token: id}`` for the Qwen
    special tokens (``<|endoftext|>``, ``<|im_start|>``, ..., ``<|video_pad|>``).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    tok = Tokenizer(BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = BpeTrainer(
        vocab_size=QWEN_BPE_VOCAB_SIZE,
        min_frequency=1,
        show_progress=False,
        special_tokens=[],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_corpus_lines(), trainer=trainer)
    base_size = tok.get_vocab_size()
    tok.add_special_tokens(
        [
            AddedToken(t, single_word=False, lstrip=False, rstrip=False, normalized=False)
            for t in QWEN_SPECIAL_TOKENS
        ]
    )
    ids = {t: tok.token_to_id(t) for t in QWEN_SPECIAL_TOKENS}
    expected = {t: base_size + i for i, t in enumerate(QWEN_SPECIAL_TOKENS)}
    if ids != expected:  # pragma: no cover - sanity check on the tokenizers library
        raise RuntimeError(f"unexpected special token ids {ids}, wanted {expected}")

    tok.save(str(out_dir / "tokenizer.json"))
    tok.model.save(str(out_dir))  # vocab.json + merges.txt (the slow-tokenizer files)

    added_tokens_decoder = {
        str(i): {
            "content": t,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for t, i in ids.items()
    }
    additional = list(QWEN_SPECIAL_TOKENS[1:])
    _write_json(
        out_dir / "tokenizer_config.json",
        {
            "add_bos_token": False,
            "add_prefix_space": False,
            "added_tokens_decoder": added_tokens_decoder,
            "additional_special_tokens": additional,
            "bos_token": None,
            "clean_up_tokenization_spaces": False,
            "eos_token": "<|im_end|>",
            "errors": "replace",
            "model_max_length": 32768,
            "pad_token": "<|endoftext|>",
            "processor_class": "ColQwen2_5_Processor",
            "split_special_tokens": False,
            "tokenizer_class": "Qwen2Tokenizer",
            "unk_token": None,
        },
    )
    _write_json(
        out_dir / "special_tokens_map.json",
        {
            "additional_special_tokens": additional,
            "eos_token": {
                "content": "<|im_end|>",
                "lstrip": False,
                "normalized": False,
                "rstrip": False,
                "single_word": False,
            },
            "pad_token": {
                "content": "<|endoftext|>",
                "lstrip": False,
                "normalized": False,
                "rstrip": False,
                "single_word": False,
            },
        },
    )
    return ids


def _train_wordpiece_vocab(
    normalizer: normalizers.Normalizer,
    pre_tokenizer: pre_tokenizers.PreTokenizer,
    vocab_size: int,
) -> dict[str, int]:
    """Learn a small WordPiece vocabulary from the built-in corpus, deterministically.

    (tokenizers' ``WordPieceTrainer`` numbers the ``##`` alphabet in hash-map order, so its
    output changes from run to run.) Vocabulary: the BERT special tokens, every character and
    its ``##`` continuation, then whole words and ``##`` word endings (2-4 characters) by
    corpus frequency, ties broken alphabetically.
    """
    counts: Counter[str] = Counter()
    for line in _corpus_lines():
        normalized = normalizer.normalize_str(line)
        counts.update(word for word, _ in pre_tokenizer.pre_tokenize_str(normalized))
    chars = sorted({c for word in counts for c in word})
    tokens = list(BERT_SPECIAL_TOKENS) + chars + ["##" + c for c in chars]
    pieces: Counter[str] = Counter()
    for word, n in counts.items():
        if len(word) > 1:
            pieces[word] += n
        for cut in range(1, len(word)):
            if 2 <= len(word) - cut <= 4:
                pieces["##" + word[cut:]] += n
    seen = set(tokens)
    for piece, _ in sorted(pieces.items(), key=lambda kv: (-kv[1], kv[0])):
        if len(tokens) >= vocab_size:
            break
        if piece not in seen:
            tokens.append(piece)
            seen.add(piece)
    return {t: i for i, t in enumerate(tokens)}


def write_bert_tokenizer(out_dir: Path, model_max_length: int = 128) -> dict[str, int]:
    """Train a tiny uncased WordPiece tokenizer in the BERT / sentence-transformers layout.

    Writes ``tokenizer.json``, ``vocab.txt``, ``tokenizer_config.json`` and
    ``special_tokens_map.json``. Returns ``{special token: id}``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True
    )
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    vocab = _train_wordpiece_vocab(normalizer, pre_tokenizer, BERT_VOCAB_SIZE)
    tok = Tokenizer(WordPiece(vocab=vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.WordPiece(prefix="##")
    tok.add_special_tokens([AddedToken(t, normalized=False) for t in BERT_SPECIAL_TOKENS])
    ids = {t: tok.token_to_id(t) for t in BERT_SPECIAL_TOKENS}
    cls_id, sep_id = ids["[CLS]"], ids["[SEP]"]
    tok.post_processor = TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0",
        pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    tok.save(str(out_dir / "tokenizer.json"))

    vocab = tok.get_vocab()
    by_id = sorted(vocab.items(), key=lambda kv: kv[1])
    if [i for _, i in by_id] != list(range(len(by_id))):  # pragma: no cover
        raise RuntimeError("WordPiece vocabulary ids are not contiguous")
    (out_dir / "vocab.txt").write_text("".join(t + "\n" for t, _ in by_id), encoding="utf-8")

    _write_json(
        out_dir / "tokenizer_config.json",
        {
            "clean_up_tokenization_spaces": True,
            "cls_token": "[CLS]",
            "do_basic_tokenize": True,
            "do_lower_case": True,
            "mask_token": "[MASK]",
            "model_max_length": model_max_length,
            "never_split": None,
            "pad_token": "[PAD]",
            "sep_token": "[SEP]",
            "strip_accents": None,
            "tokenize_chinese_chars": True,
            "tokenizer_class": "BertTokenizer",
            "unk_token": "[UNK]",
        },
    )
    _write_json(
        out_dir / "special_tokens_map.json",
        {
            "cls_token": "[CLS]",
            "mask_token": "[MASK]",
            "pad_token": "[PAD]",
            "sep_token": "[SEP]",
            "unk_token": "[UNK]",
        },
    )
    return ids


# --------------------------------------------------------------------------------------------
# ColQwen2.5
# --------------------------------------------------------------------------------------------


def qwen_image_processor_config(
    min_pixels: int = TINY_MIN_PIXELS, max_pixels: int = TINY_MAX_PIXELS
) -> dict[str, Any]:
    """The Qwen2-VL image processor settings (as in ``preprocessor_config.json``)."""
    return {
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": list(CLIP_IMAGE_MEAN),
        "image_processor_type": "Qwen2VLImageProcessor",
        "image_std": list(CLIP_IMAGE_STD),
        "max_pixels": max_pixels,
        "merge_size": 2,
        "min_pixels": min_pixels,
        "patch_size": 14,
        "processor_class": "ColQwen2_5_Processor",
        "resample": 3,
        "rescale_factor": 1 / 255,
        "size": {"longest_edge": max_pixels, "shortest_edge": min_pixels},
        "temporal_patch_size": 2,
    }


def colqwen_config(special_ids: dict[str, int], vocab_size: int) -> dict[str, Any]:
    """The ``config.json`` of the tiny ColQwen2.5 (layout of qnguyen3/colqwen2.5-v0.2-mlx)."""
    hidden, heads = 64, 4
    head_dim = hidden // heads
    mrope_section = [2, 3, 3]
    assert sum(mrope_section) == head_dim // 2
    text: dict[str, Any] = {
        "model_type": "qwen2_5_vl",
        "hidden_size": hidden,
        "num_hidden_layers": 2,
        "num_attention_heads": heads,
        "num_key_value_heads": 2,
        "intermediate_size": 128,
        "hidden_act": "silu",
        "rms_norm_eps": 1e-6,
        "vocab_size": vocab_size,
        "max_position_embeddings": 4096,
        "rope_theta": 1000000.0,
        "rope_scaling": {"type": "mrope", "mrope_section": mrope_section},
        "tie_word_embeddings": True,
        "attention_dropout": 0.0,
        "use_sliding_window": False,
        "sliding_window": 4096,
        "max_window_layers": 2,
        "initializer_range": 0.02,
        "bos_token_id": special_ids["<|endoftext|>"],
        "eos_token_id": special_ids["<|im_end|>"],
        "torch_dtype": "float32",
        "use_cache": True,
    }
    vision = {
        "model_type": "qwen2_5_vl",
        "depth": 4,
        "hidden_size": 32,
        "hidden_act": "silu",
        "intermediate_size": 64,
        "num_heads": 2,
        "in_chans": 3,
        "in_channels": 3,
        "out_hidden_size": hidden,
        "patch_size": 14,
        "spatial_patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "window_size": 112,
        "fullatt_block_indexes": [1, 3],
        "tokens_per_second": 2,
    }
    vlm_config: dict[str, Any] = {
        "architectures": ["Qwen2_5_VLForConditionalGeneration"],
        **text,
        "text_config": dict(text),
        "vision_config": vision,
        "image_token_id": special_ids["<|image_pad|>"],
        "video_token_id": special_ids["<|video_pad|>"],
        "vision_start_token_id": special_ids["<|vision_start|>"],
        "vision_end_token_id": special_ids["<|vision_end|>"],
        "vision_token_id": special_ids["<|vision_pad|>"],
    }
    return {
        "model_type": "colqwen2_5",
        "embedding_dim": 128,
        "initializer_range": 0.02,
        "vlm_config": vlm_config,
    }


def colqwen_published_key(mlx_key: str) -> str:
    """Map an MLX-internal ColQwen2.5 parameter name to its published (HF-style) name.

    The inverse of ``mlx_embeddings.models.colqwen2_5.Model.sanitize`` (plus mlx_vlm's
    ``qwen2_5_vl.Model.sanitize``, which leaves these names alone).
    """
    if mlx_key.startswith("vlm.vision_tower."):
        return "vlm.model.visual." + mlx_key[len("vlm.vision_tower.") :]
    if mlx_key.startswith("vlm.language_model.model."):
        return "vlm.model.language_model." + mlx_key[len("vlm.language_model.model.") :]
    if mlx_key.startswith("embedding_proj_layer."):
        return mlx_key
    raise ValueError(f"unexpected ColQwen2.5 parameter {mlx_key}")


def make_tiny_colqwen(
    out_dir: Path,
    *,
    processor_layout: ProcessorLayout = "preprocessor",
    seed: int = DEFAULT_SEED,
    min_pixels: int = TINY_MIN_PIXELS,
    max_pixels: int = TINY_MAX_PIXELS,
) -> Path:
    """Write a tiny random ColQwen2.5 into ``out_dir`` (created); return ``out_dir``."""
    from mlx_embeddings.models.colqwen2_5 import Model, ModelArgs

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    special_ids = write_qwen_tokenizer(out_dir)
    vocab_size = _round_up(max(special_ids.values()) + 1, 64)
    config = colqwen_config(special_ids, vocab_size)
    _write_json(out_dir / "config.json", config)

    # ModelConfig.from_dict mutates the dict it gets, so build from a private copy.
    model = Model(ModelArgs.from_dict(json.loads(json.dumps(config))))
    params = _random_parameters(model, seed)
    weights = {colqwen_published_key(k): v for k, v in params.items()}
    patch_key = "vlm.model.visual.patch_embed.proj.weight"
    # MLX Conv3d layout (out, t, h, w, in) -> published PyTorch layout (out, in, t, h, w);
    # colqwen2_5.Model.sanitize transposes it back on load.
    weights[patch_key] = weights[patch_key].transpose(0, 4, 1, 2, 3)
    mx.save_safetensors(
        str(out_dir / "model.safetensors"),
        dict(sorted(weights.items())),
        metadata={"format": "mlx"},
    )

    image_processor = qwen_image_processor_config(min_pixels, max_pixels)
    if processor_layout == "preprocessor":
        _write_json(out_dir / "preprocessor_config.json", image_processor)
    elif processor_layout == "processor":
        _write_json(
            out_dir / "processor_config.json",
            {"image_processor": image_processor, "processor_class": "ColQwen2_5_Processor"},
        )
    else:
        raise ValueError(f"unknown processor layout {processor_layout!r}")
    return out_dir


# --------------------------------------------------------------------------------------------
# BERT (sentence-transformers layout)
# --------------------------------------------------------------------------------------------


def bert_config(vocab_size: int, pad_token_id: int) -> dict[str, Any]:
    """The ``config.json`` of the tiny BERT (layout of all-MiniLM-L6-v2)."""
    return {
        "architectures": ["BertModel"],
        "attention_probs_dropout_prob": 0.1,
        "gradient_checkpointing": False,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "hidden_size": 32,
        "initializer_range": 0.02,
        "intermediate_size": 64,
        "layer_norm_eps": 1e-12,
        "max_position_embeddings": 128,
        "model_type": "bert",
        "num_attention_heads": 2,
        "num_hidden_layers": 2,
        "pad_token_id": pad_token_id,
        "position_embedding_type": "absolute",
        "type_vocab_size": 2,
        "use_cache": True,
        "vocab_size": vocab_size,
    }


def make_tiny_bert(out_dir: Path, *, seed: int = DEFAULT_SEED) -> Path:
    """Write a tiny random sentence-transformers BERT into ``out_dir``; return ``out_dir``."""
    from mlx_embeddings.models.bert import Model, ModelArgs

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    special_ids = write_bert_tokenizer(out_dir, model_max_length=128)
    vocab_size = len((out_dir / "vocab.txt").read_text(encoding="utf-8").splitlines())
    config = bert_config(vocab_size, special_ids["[PAD]"])
    _write_json(out_dir / "config.json", config)

    model = Model(ModelArgs.from_dict(config))
    weights = _random_parameters(model, seed)
    # HF checkpoints carry the (unused) position_ids buffer; bert.Model.sanitize drops it.
    weights["embeddings.position_ids"] = mx.arange(
        config["max_position_embeddings"], dtype=mx.int64
    )[None, :]
    mx.save_safetensors(
        str(out_dir / "model.safetensors"),
        dict(sorted(weights.items())),
        metadata={"format": "pt"},
    )

    hidden = config["hidden_size"]
    _write_json(
        out_dir / "modules.json",
        [
            {
                "idx": 0,
                "name": "0",
                "path": "",
                "type": "sentence_transformers.models.Transformer",
            },
            {
                "idx": 1,
                "name": "1",
                "path": "1_Pooling",
                "type": "sentence_transformers.models.Pooling",
            },
            {
                "idx": 2,
                "name": "2",
                "path": "2_Normalize",
                "type": "sentence_transformers.models.Normalize",
            },
        ],
    )
    _write_json(
        out_dir / "sentence_bert_config.json", {"max_seq_length": 128, "do_lower_case": False}
    )
    _write_json(
        out_dir / "config_sentence_transformers.json",
        {"__version__": {"sentence_transformers": "2.0.0", "transformers": "4.6.1"}},
    )
    _write_json(
        out_dir / "1_Pooling" / "config.json",
        {
            "word_embedding_dimension": hidden,
            "pooling_mode_cls_token": False,
            "pooling_mode_mean_tokens": True,
            "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False,
        },
    )
    return out_dir


# --------------------------------------------------------------------------------------------
# Pooled text families beyond BERT: XLM-RoBERTa, ModernBERT, Qwen3-Embedding
# --------------------------------------------------------------------------------------------


def _st_modules(*extra: tuple[str, str]) -> list[dict[str, Any]]:
    """``modules.json``: Transformer, Pooling, then ``extra`` (path, type) modules."""
    modules: list[dict[str, Any]] = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {
            "idx": 1,
            "name": "1",
            "path": "1_Pooling",
            "type": "sentence_transformers.models.Pooling",
        },
    ]
    for i, (path, kind) in enumerate(extra, start=2):
        modules.append(
            {"idx": i, "name": str(i), "path": path, "type": f"sentence_transformers.models.{kind}"}
        )
    return modules


def write_st_files(
    out_dir: Path,
    *,
    dim: int,
    pooling: str,
    max_seq_length: int,
    prompts: dict[str, str] | None = None,
    default_prompt_name: str | None = None,
    include_prompt: bool = True,
) -> None:
    """The sentence-transformers files: modules.json (Transformer, Pooling, Normalize),
    sentence_bert_config.json, config_sentence_transformers.json, 1_Pooling/config.json."""
    _write_json(out_dir / "modules.json", _st_modules(("2_Normalize", "Normalize")))
    _write_json(
        out_dir / "sentence_bert_config.json",
        {"max_seq_length": max_seq_length, "do_lower_case": False},
    )
    st_config: dict[str, Any] = {
        "__version__": {"sentence_transformers": "3.3.1", "transformers": "4.48.0"},
        "prompts": prompts or {},
        "default_prompt_name": default_prompt_name,
        "similarity_fn_name": "cosine",
    }
    _write_json(out_dir / "config_sentence_transformers.json", st_config)
    modes = {
        "cls": "cls_token",
        "mean": "mean_tokens",
        "max": "max_tokens",
        "lasttoken": "lasttoken",
    }
    pooling_config: dict[str, Any] = {"word_embedding_dimension": dim}
    for mode, key in modes.items():
        pooling_config[f"pooling_mode_{key}"] = mode == pooling
    pooling_config["pooling_mode_mean_sqrt_len_tokens"] = False
    pooling_config["pooling_mode_weightedmean_tokens"] = False
    pooling_config["include_prompt"] = include_prompt
    _write_json(out_dir / "1_Pooling" / "config.json", pooling_config)


def _save_weights(out_dir: Path, weights: dict[str, mx.array]) -> None:
    mx.save_safetensors(
        str(out_dir / "model.safetensors"), dict(sorted(weights.items())), metadata={"format": "pt"}
    )


def _strip_prefix(params: dict[str, mx.array], prefix: str) -> dict[str, mx.array]:
    """MLX names ``model.x`` -> published base-model names ``x`` (the ST checkpoints' layout)."""
    out = {}
    for k, v in params.items():
        if not k.startswith(prefix):
            raise ValueError(f"unexpected parameter {k}")
        out[k[len(prefix) :]] = v
    return out


XLMR_SPECIAL_TOKENS: tuple[str, ...] = ("<s>", "<pad>", "</s>", "<unk>")
XLMR_VOCAB_SIZE = 700


def _unigram_vocab(
    pre_tokenizer: pre_tokenizers.PreTokenizer, size: int
) -> list[tuple[str, float]]:
    """A deterministic Unigram vocabulary from the corpus (tokenizers' UnigramTrainer is not
    deterministic): every character, then words and word pieces by frequency, log-prob scores."""
    counts: Counter[str] = Counter()
    for line in _corpus_lines():
        counts.update(word for word, _ in pre_tokenizer.pre_tokenize_str(line))
    pieces: Counter[str] = Counter()
    for word, n in counts.items():
        for start in range(len(word)):
            for end in range(start + 1, min(len(word), start + 8) + 1):
                pieces[word[start:end]] += n
    chars = sorted({c for word in counts for c in word})
    chosen = list(chars)
    seen = set(chosen)
    for piece, _ in sorted(pieces.items(), key=lambda kv: (-kv[1] * len(kv[0]), kv[0])):
        if len(chosen) >= size - len(XLMR_SPECIAL_TOKENS) - 1:
            break
        if piece not in seen:
            chosen.append(piece)
            seen.add(piece)
    total = sum(pieces[p] for p in chosen) + len(chosen)
    vocab = [(t, 0.0) for t in XLMR_SPECIAL_TOKENS]
    vocab += [(p, round(math.log((pieces[p] + 1) / total), 6)) for p in chosen]
    vocab.append(("<mask>", 0.0))
    return vocab


def write_xlmr_tokenizer(out_dir: Path, model_max_length: int = 128) -> dict[str, int]:
    """A tiny SentencePiece-style Unigram tokenizer in the XLM-RoBERTa layout (<s> $A </s>)."""
    from tokenizers.models import Unigram

    out_dir.mkdir(parents=True, exist_ok=True)
    pre = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    vocab = _unigram_vocab(pre, XLMR_VOCAB_SIZE)
    tok = Tokenizer(Unigram(vocab, unk_id=3, byte_fallback=False))
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")]
    )
    tok.pre_tokenizer = pre
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    specials = [*XLMR_SPECIAL_TOKENS, "<mask>"]
    tok.add_special_tokens([AddedToken(t, normalized=False) for t in specials])
    ids = {t: tok.token_to_id(t) for t in specials}
    tok.post_processor = TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", ids["<s>"]), ("</s>", ids["</s>"])],
    )
    tok.save(str(out_dir / "tokenizer.json"))
    _write_json(
        out_dir / "tokenizer_config.json",
        {
            "bos_token": "<s>",
            "clean_up_tokenization_spaces": True,
            "cls_token": "<s>",
            "eos_token": "</s>",
            "mask_token": "<mask>",
            "model_max_length": model_max_length,
            "pad_token": "<pad>",
            "sep_token": "</s>",
            "tokenizer_class": "XLMRobertaTokenizer",
            "unk_token": "<unk>",
        },
    )
    _write_json(
        out_dir / "special_tokens_map.json",
        {
            "bos_token": "<s>",
            "cls_token": "<s>",
            "eos_token": "</s>",
            "mask_token": "<mask>",
            "pad_token": "<pad>",
            "sep_token": "</s>",
            "unk_token": "<unk>",
        },
    )
    return ids


def make_tiny_xlm_roberta(out_dir: Path, *, seed: int = DEFAULT_SEED) -> Path:
    """A tiny XLM-RoBERTa in the sentence-transformers layout of BAAI/bge-m3 (CLS pooling,
    Normalize; XLMRobertaModel weights; positions start after the pad id)."""
    from mlx_embeddings.models.xlm_roberta import Model, ModelArgs

    out_dir.mkdir(parents=True, exist_ok=True)
    ids = write_xlmr_tokenizer(out_dir)
    config = {
        "architectures": ["XLMRobertaModel"],
        "attention_probs_dropout_prob": 0.1,
        "bos_token_id": ids["<s>"],
        "eos_token_id": ids["</s>"],
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "hidden_size": 32,
        "initializer_range": 0.02,
        "intermediate_size": 64,
        "layer_norm_eps": 1e-05,
        "max_position_embeddings": 130,
        "model_type": "xlm-roberta",
        "num_attention_heads": 2,
        "num_hidden_layers": 2,
        "output_past": True,
        "pad_token_id": ids["<pad>"],
        "position_embedding_type": "absolute",
        "type_vocab_size": 1,
        "use_cache": True,
        "vocab_size": _round_up(max(ids.values()) + 1, 8),
    }
    _write_json(out_dir / "config.json", config)
    model = Model(ModelArgs.from_dict(config))
    _save_weights(out_dir, _random_parameters(model, seed + 1))
    write_st_files(out_dir, dim=32, pooling="cls", max_seq_length=128)
    return out_dir


MODERNBERT_SPECIAL_TOKENS: tuple[str, ...] = ("[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]")


def write_bpe_tokenizer(
    out_dir: Path,
    *,
    specials: tuple[str, ...],
    single: str,
    pair: str,
    tokenizer_config: dict[str, Any],
    vocab_size: int = 800,
) -> dict[str, int]:
    """A tiny byte-level BPE (GPT-2 style) with ``specials`` after the vocabulary and a
    ``TemplateProcessing`` post-processor (``single``/``pair``, e.g. ``"[CLS] $A [SEP]"``)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        show_progress=False,
        special_tokens=[],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_corpus_lines(), trainer=trainer)
    tok.add_special_tokens([AddedToken(t, normalized=False) for t in specials])
    ids = {t: tok.token_to_id(t) for t in specials}
    used = [t.split(":")[0] for t in f"{single} {pair}".split() if t.split(":")[0] in ids]
    tok.post_processor = TemplateProcessing(
        single=single, pair=pair, special_tokens=[(t, ids[t]) for t in dict.fromkeys(used)]
    )
    tok.save(str(out_dir / "tokenizer.json"))
    _write_json(out_dir / "tokenizer_config.json", tokenizer_config)
    _write_json(
        out_dir / "special_tokens_map.json",
        {k: v for k, v in tokenizer_config.items() if k.endswith("_token") and v is not None},
    )
    return ids


def make_tiny_modernbert(out_dir: Path, *, seed: int = DEFAULT_SEED) -> Path:
    """A tiny ModernBERT in the layout of nomic-ai/modernbert-embed-base: ``ModernBertModel``
    weights, transformers-4 config keys, exact GELU, alternating global/local (sliding window)
    attention, mean pooling + Normalize, ``search_query: `` / ``search_document: `` prompts."""
    from mlx_embeddings.models.modernbert import Model, ModelArgs

    out_dir.mkdir(parents=True, exist_ok=True)
    ids = write_bpe_tokenizer(
        out_dir,
        specials=MODERNBERT_SPECIAL_TOKENS,
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        tokenizer_config={
            "clean_up_tokenization_spaces": True,
            "cls_token": "[CLS]",
            "mask_token": "[MASK]",
            "model_input_names": ["input_ids", "attention_mask"],
            "model_max_length": 128,
            "pad_token": "[PAD]",
            "sep_token": "[SEP]",
            "tokenizer_class": "PreTrainedTokenizerFast",
            "unk_token": "[UNK]",
        },
    )
    config = {
        "architectures": ["ModernBertModel"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": ids["[CLS]"],
        "classifier_activation": "gelu",
        "classifier_bias": False,
        "classifier_dropout": 0.0,
        "classifier_pooling": "mean",
        "cls_token_id": ids["[CLS]"],
        "decoder_bias": True,
        "deterministic_flash_attn": False,
        "embedding_dropout": 0.0,
        "eos_token_id": ids["[SEP]"],
        "global_attn_every_n_layers": 3,
        "global_rope_theta": 160000.0,
        "gradient_checkpointing": False,
        "hidden_activation": "gelu",
        "hidden_size": 32,
        "initializer_cutoff_factor": 2.0,
        "initializer_range": 0.02,
        "intermediate_size": 48,
        "layer_norm_eps": 1e-05,
        "local_attention": 8,
        "local_rope_theta": 10000.0,
        "max_position_embeddings": 128,
        "mlp_bias": False,
        "mlp_dropout": 0.0,
        "model_type": "modernbert",
        "norm_bias": False,
        "norm_eps": 1e-05,
        "num_attention_heads": 2,
        "num_hidden_layers": 3,
        "pad_token_id": ids["[PAD]"],
        "position_embedding_type": "absolute",
        "sep_token_id": ids["[SEP]"],
        "torch_dtype": "float32",
        "vocab_size": _round_up(max(ids.values()) + 1, 8),
    }
    _write_json(out_dir / "config.json", config)
    model = Model(ModelArgs.from_dict(dict(config)))
    _save_weights(out_dir, _strip_prefix(_random_parameters(model, seed + 2), "model."))
    write_st_files(
        out_dir,
        dim=32,
        pooling="mean",
        max_seq_length=128,
        prompts={"query": "search_query: ", "document": "search_document: "},
    )
    return out_dir


QWEN3_QUERY_PROMPT = (
    "Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery:"
)


def make_tiny_qwen3(out_dir: Path, *, seed: int = DEFAULT_SEED) -> Path:
    """A tiny Qwen3-Embedding in the layout of Qwen/Qwen3-Embedding-0.6B: Qwen3 decoder
    weights without the ``model.`` prefix, a Qwen2 tokenizer that appends ``<|endoftext|>`` and
    pads on the LEFT (as published), last-token pooling + Normalize, the instruct query prompt."""
    from mlx_embeddings.models.qwen3 import Model, ModelArgs

    out_dir.mkdir(parents=True, exist_ok=True)
    special_ids = write_qwen_tokenizer(out_dir)
    tok = Tokenizer.from_file(str(out_dir / "tokenizer.json"))
    eos = special_ids["<|endoftext|>"]
    tok.post_processor = TemplateProcessing(
        single="$A:0 <|endoftext|>:0",
        pair="$A:0 <|endoftext|>:0 $B:1 <|endoftext|>:1",
        special_tokens=[("<|endoftext|>", eos)],
    )
    tok.save(str(out_dir / "tokenizer.json"))
    tok_config = json.loads((out_dir / "tokenizer_config.json").read_text())
    tok_config.pop("processor_class", None)
    tok_config.update(padding_side="left", model_max_length=131072)
    _write_json(out_dir / "tokenizer_config.json", tok_config)
    config = {
        "architectures": ["Qwen3ForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": eos,
        "eos_token_id": eos,
        "head_dim": 16,
        "hidden_act": "silu",
        "hidden_size": 64,
        "initializer_range": 0.02,
        "intermediate_size": 128,
        "max_position_embeddings": 512,
        "max_window_layers": 2,
        "model_type": "qwen3",
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
        "num_key_value_heads": 2,
        "rms_norm_eps": 1e-06,
        "rope_scaling": None,
        "rope_theta": 1000000,
        "sliding_window": None,
        "tie_word_embeddings": True,
        "torch_dtype": "float32",
        "use_cache": True,
        "use_sliding_window": False,
        "vocab_size": _round_up(max(special_ids.values()) + 1, 64),
    }
    _write_json(out_dir / "config.json", config)
    model = Model(ModelArgs.from_dict(dict(config)))
    _save_weights(out_dir, _strip_prefix(_random_parameters(model, seed + 3), "model."))
    write_st_files(
        out_dir,
        dim=64,
        pooling="lasttoken",
        max_seq_length=256,
        prompts={"query": QWEN3_QUERY_PROMPT, "document": ""},
    )
    return out_dir


GEMMA_SPECIAL_TOKENS: tuple[str, ...] = ("<pad>", "<eos>", "<bos>", "<unk>", "<mask>")
EMBEDDINGGEMMA_PROMPTS: dict[str, str] = {
    "query": "task: search result | query: ",
    "document": "title: none | text: ",
    "Classification": "task: classification | query: ",
    "Clustering": "task: clustering | query: ",
    "STS": "task: sentence similarity | query: ",
}


def write_gemma_tokenizer(out_dir: Path, vocab_size: int = 800) -> dict[str, int]:
    """A tiny Gemma-style SentencePiece BPE (spaces as ``▁``, byte fallback ``<0x00>``..)
    with ``<pad> <eos> <bos> <unk> <mask>`` at ids 0-4, as transformers' GemmaTokenizer expects;
    ``<bos> $A <eos>`` (add_bos_token / add_eos_token, as EmbeddingGemma)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    trainer_tok = Tokenizer(BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    trainer_tok.normalizer = normalizers.Replace(" ", "\u2581")
    trainer_tok.pre_tokenizer = pre_tokenizers.Split(" ", behavior="merged_with_previous")
    trainer = BpeTrainer(vocab_size=vocab_size, min_frequency=1, show_progress=False)
    trainer_tok.train_from_iterator(_corpus_lines(), trainer=trainer)
    trained = json.loads(trainer_tok.to_str())["model"]
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    order = list(GEMMA_SPECIAL_TOKENS) + byte_tokens
    order += [
        t for t, _ in sorted(trained["vocab"].items(), key=lambda kv: kv[1]) if t not in order
    ]
    vocab = {t: i for i, t in enumerate(order)}
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in trained["merges"]]
    tok = Tokenizer(
        BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True)
    )
    tok.normalizer = normalizers.Replace(" ", "\u2581")
    tok.pre_tokenizer = pre_tokenizers.Split(" ", behavior="merged_with_previous")
    tok.decoder = decoders.Sequence(
        [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()]
    )
    tok.add_special_tokens([AddedToken(t, normalized=False) for t in GEMMA_SPECIAL_TOKENS])
    ids = {t: vocab[t] for t in GEMMA_SPECIAL_TOKENS}
    tok.post_processor = TemplateProcessing(
        single="<bos> $A <eos>",
        pair="<bos> $A <eos> $B:1 <eos>:1",
        special_tokens=[("<bos>", ids["<bos>"]), ("<eos>", ids["<eos>"])],
    )
    tok.save(str(out_dir / "tokenizer.json"))
    config = {
        "add_bos_token": True,
        "add_eos_token": True,
        "bos_token": "<bos>",
        "clean_up_tokenization_spaces": False,
        "eos_token": "<eos>",
        "mask_token": "<mask>",
        "model_max_length": 2048,
        "pad_token": "<pad>",
        "padding_side": "right",
        "tokenizer_class": "GemmaTokenizer",
        "unk_token": "<unk>",
    }
    _write_json(out_dir / "tokenizer_config.json", config)
    _write_json(
        out_dir / "special_tokens_map.json",
        {k: v for k, v in config.items() if k.endswith("_token") and isinstance(v, str)},
    )
    return ids


def make_tiny_gemma3(out_dir: Path, *, seed: int = DEFAULT_SEED) -> Path:
    """A tiny EmbeddingGemma in the layout of google/embeddinggemma-300m: ``Gemma3TextModel``
    weights, bidirectional attention with sliding-window layers (``layer_types``; window 4, so
    short texts already cross it), mean pooling, two bias-free Dense layers (2_Dense, 3_Dense,
    each with its own model.safetensors), Normalize, and the EmbeddingGemma prompts."""
    from mlx_embeddings.models.gemma3_text import Model, ModelArgs

    out_dir.mkdir(parents=True, exist_ok=True)
    ids = write_gemma_tokenizer(out_dir)
    hidden = 64
    config = {
        "_sliding_window_pattern": 3,
        "architectures": ["Gemma3TextModel"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "attn_logit_softcapping": None,
        "bos_token_id": ids["<bos>"],
        "eos_token_id": ids["<eos>"],
        "final_logit_softcapping": None,
        "head_dim": 16,
        "hidden_activation": "gelu_pytorch_tanh",
        "hidden_size": hidden,
        "initializer_range": 0.02,
        "intermediate_size": 128,
        "layer_types": ["sliding_attention", "sliding_attention", "full_attention"],
        "max_position_embeddings": 256,
        "model_type": "gemma3_text",
        "num_attention_heads": 4,
        "num_hidden_layers": 3,
        "num_key_value_heads": 1,
        "pad_token_id": ids["<pad>"],
        "query_pre_attn_scalar": 16,
        "rms_norm_eps": 1e-06,
        "rope_local_base_freq": 10000.0,
        "rope_scaling": None,
        "rope_theta": 1000000.0,
        "sliding_window": 4,
        "torch_dtype": "float32",
        "use_bidirectional_attention": True,
        "use_cache": True,
        "vocab_size": _round_up(
            Tokenizer.from_file(str(out_dir / "tokenizer.json")).get_vocab_size(), 8
        ),
    }
    _write_json(out_dir / "config.json", config)
    args = ModelArgs.from_dict({**config, "sliding_window_pattern": 3})
    model = Model(args)
    params = _random_parameters(model, seed + 4)
    dense = {k: params.pop(k) for k in list(params) if k.startswith("dense.")}
    _save_weights(out_dir, _strip_prefix(params, "model."))
    modules = _st_modules(("2_Dense", "Dense"), ("3_Dense", "Dense"), ("4_Normalize", "Normalize"))
    for i, folder in enumerate(("2_Dense", "3_Dense")):
        weight = dense[f"dense.{i}.weight"]
        out_f, in_f = weight.shape
        _write_json(
            out_dir / folder / "config.json",
            {
                "in_features": in_f,
                "out_features": out_f,
                "bias": False,
                "activation_function": "torch.nn.modules.linear.Identity",
            },
        )
        mx.save_safetensors(
            str(out_dir / folder / "model.safetensors"),
            {"linear.weight": weight},
            metadata={"format": "pt"},
        )
    write_st_files(
        out_dir,
        dim=hidden,
        pooling="mean",
        max_seq_length=128,
        prompts=EMBEDDINGGEMMA_PROMPTS,
    )
    _write_json(out_dir / "modules.json", modules)
    return out_dir


LLAMA_SPECIAL_TOKENS: tuple[str, ...] = ("<|begin_of_text|>", "<|end_of_text|>")


def _write_llama3_tokenizer(
    out_dir: Path, specials: tuple[str, ...], *, padding_side: str
) -> dict[str, int]:
    """The Llama-3 style byte-level BPE (``<|begin_of_text|>`` first) of the llama_bidirec and
    llama_nemotron_vl tiny models."""
    return write_bpe_tokenizer(
        out_dir,
        specials=specials,
        single="<|begin_of_text|> $A",
        pair="<|begin_of_text|> $A <|begin_of_text|>:1 $B:1",
        tokenizer_config={
            "bos_token": "<|begin_of_text|>",
            "clean_up_tokenization_spaces": True,
            "eos_token": "<|end_of_text|>",
            "model_input_names": ["input_ids", "attention_mask"],
            "model_max_length": 8192,
            "pad_token": "<|end_of_text|>",
            "padding_side": padding_side,
            "tokenizer_class": "PreTrainedTokenizerFast",
        },
    )


def _llama_bidirec_config(ids: dict[str, int], **extra: Any) -> dict[str, Any]:
    """A tiny ``LlamaBidirectionalModel`` config (llama3 RoPE scaling, mean pooling), keys in
    the published files' sorted order; ``extra`` adds or sets keys."""
    config = {
        "architectures": ["LlamaBidirectionalModel"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": ids["<|begin_of_text|>"],
        "eos_token_id": ids["<|end_of_text|>"],
        "head_dim": 16,
        "hidden_act": "silu",
        "hidden_size": 64,
        "initializer_range": 0.02,
        "intermediate_size": 128,
        "max_position_embeddings": 256,
        "mlp_bias": False,
        "model_type": "llama_bidirec",
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
        "num_key_value_heads": 2,
        "pad_token_id": ids["<|end_of_text|>"],
        "pooling": "avg",
        "rms_norm_eps": 1e-05,
        "rope_scaling": {
            "factor": 32.0,
            "high_freq_factor": 4.0,
            "low_freq_factor": 1.0,
            "original_max_position_embeddings": 64,
            "rope_type": "llama3",
        },
        "rope_theta": 500000.0,
        "torch_dtype": "float32",
        "vocab_size": _round_up(max(ids.values()) + 1, 8),
        **extra,
    }
    return dict(sorted(config.items()))


def make_tiny_llama_bidirec(out_dir: Path, *, seed: int = DEFAULT_SEED) -> Path:
    """A tiny bidirectional Llama embedder in the layout of nvidia/llama-nemotron-embed-1b-v2
    (``model_type`` llama_bidirec, ``LlamaBidirectionalModel`` weights without a prefix,
    llama3 RoPE scaling, Llama-3 style byte-level BPE with ``<|begin_of_text|>`` first, mean
    pooling + Normalize, ``query: `` / ``passage: `` prompts)."""
    from mlx_embeddings.models.llama_bidirec import Model, ModelArgs

    out_dir.mkdir(parents=True, exist_ok=True)
    ids = _write_llama3_tokenizer(out_dir, LLAMA_SPECIAL_TOKENS, padding_side="right")
    config = _llama_bidirec_config(ids, tie_word_embeddings=True, pretraining_tp=1, use_cache=True)
    _write_json(out_dir / "config.json", config)
    model = Model(ModelArgs.from_dict(dict(config)))
    _save_weights(out_dir, _strip_prefix(_random_parameters(model, seed + 6), "model."))
    write_st_files(
        out_dir,
        dim=64,
        pooling="mean",
        max_seq_length=128,
        prompts={"query": "query: ", "document": "passage: "},
    )
    return out_dir


LFM2_SPECIAL_TOKENS: tuple[str, ...] = (
    "<|pad|>",
    "<|startoftext|>",
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
)
LFM2_COLBERT_DIRNAME = "tiny-lfm2-colbert"
# pylate's ColBERT settings (config_sentence_transformers.json); the prefixes are tokens of the
# tokenizer (pylate adds them with add_tokens when it saves the model)
LFM2_COLBERT_SETTINGS: dict[str, Any] = {
    "query_prefix": "[Q] ",
    "document_prefix": "[D] ",
    "query_length": 32,
    "document_length": 48,
    "attend_to_expansion_tokens": False,
    "do_query_expansion": True,
    "skiplist_words": list("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"),
}


def make_tiny_lfm2_colbert(out_dir: Path, *, seed: int = DEFAULT_SEED) -> Path:
    """A tiny LFM2-ColBERT in the layout of LiquidAI/LFM2-ColBERT-350M (a pylate ColBERT):
    ``Lfm2Model`` weights without a prefix (conv weights in the torch layout (C, 1, K)),
    ``1_Dense/`` (pylate Dense, ``linear.weight``, no bias), a byte-level BPE that puts
    ``<|startoftext|>`` first, the ``[Q] `` / ``[D] `` prefix tokens added after the vocabulary,
    and pylate's settings in ``config_sentence_transformers.json``."""
    from mlx_embeddings.models.lfm2 import Model, ModelArgs

    out_dir.mkdir(parents=True, exist_ok=True)
    ids = write_bpe_tokenizer(
        out_dir,
        specials=LFM2_SPECIAL_TOKENS,
        single="<|startoftext|> $A",
        pair="<|startoftext|> $A $B:1",
        tokenizer_config={
            "bos_token": "<|startoftext|>",
            "clean_up_tokenization_spaces": False,
            "eos_token": "<|im_end|>",
            "legacy": False,
            "model_input_names": ["input_ids", "attention_mask"],
            "model_max_length": 1000000000000000019884624838656,
            "pad_token": "<|pad|>",
            "padding_side": "right",
            "tokenizer_class": "PreTrainedTokenizerFast",
            "use_default_system_prompt": False,
        },
    )
    tok = Tokenizer.from_file(str(out_dir / "tokenizer.json"))
    prefixes = [LFM2_COLBERT_SETTINGS["query_prefix"], LFM2_COLBERT_SETTINGS["document_prefix"]]
    tok.add_tokens([AddedToken(p, normalized=True, special=False) for p in prefixes])
    tok.save(str(out_dir / "tokenizer.json"))
    vocab_size = tok.get_vocab_size(with_added_tokens=True)
    config = {
        "architectures": ["Lfm2Model"],
        "block_auto_adjust_ff_dim": True,
        "block_dim": 64,
        "block_ff_dim": 192,
        "block_ffn_dim_multiplier": 1.0,
        "block_mlp_init_scale": 1.0,
        "block_multiple_of": 32,
        "block_norm_eps": 1e-05,
        "block_out_init_scale": 1.0,
        "block_use_swiglu": True,
        "block_use_xavier_init": True,
        "bos_token_id": ids["<|startoftext|>"],
        "conv_L_cache": 3,
        "conv_bias": False,
        "conv_dim": 64,
        "conv_dim_out": 64,
        "conv_use_xavier_init": True,
        "eos_token_id": ids["<|im_end|>"],
        "hidden_size": 64,
        "initializer_range": 0.02,
        "intermediate_size": 192,
        "layer_types": ["conv", "full_attention", "conv", "full_attention"],
        "max_position_embeddings": 128000,
        "model_type": "lfm2",
        "norm_eps": 1e-05,
        "num_attention_heads": 4,
        "num_heads": 4,
        "num_hidden_layers": 4,
        "num_key_value_heads": 2,
        "pad_token_id": ids["<|pad|>"],
        "rope_theta": 1000000.0,
        "torch_dtype": "float32",
        "use_cache": True,
        "use_pos_enc": True,
        "vocab_size": vocab_size,
    }
    _write_json(out_dir / "config.json", config)
    dim = 32
    model = Model(ModelArgs.from_dict({**config, "out_features": dim}))
    params = _random_parameters(model, seed + 7)
    dense = {"linear.weight": params.pop("dense.0.weight")}
    backbone = _strip_prefix(params, "model.")
    for k, v in backbone.items():
        if k.endswith("conv.conv.weight"):  # MLX (C, K, 1) -> torch (C, 1, K)
            backbone[k] = v.transpose(0, 2, 1)
    _save_weights(out_dir, backbone)
    (out_dir / "1_Dense").mkdir(exist_ok=True)
    _save_weights(out_dir / "1_Dense", dense)
    _write_json(
        out_dir / "1_Dense" / "config.json",
        {
            "in_features": 64,
            "out_features": dim,
            "bias": False,
            "activation_function": "torch.nn.modules.linear.Identity",
            "use_residual": False,
        },
    )
    _write_json(
        out_dir / "modules.json",
        [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Dense", "type": "pylate.models.Dense.Dense"},
        ],
    )
    _write_json(
        out_dir / "sentence_bert_config.json", {"max_seq_length": 511, "do_lower_case": False}
    )
    _write_json(
        out_dir / "config_sentence_transformers.json",
        {
            "__version__": {
                "sentence_transformers": "5.1.1",
                "transformers": "4.57.1",
                "pytorch": "2.8.0",
            },
            "prompts": {"query": "", "document": ""},
            "default_prompt_name": None,
            "similarity_fn_name": "MaxSim",
            **LFM2_COLBERT_SETTINGS,
        },
    )
    return out_dir


COLIDEFICS3_DIRNAME = "tiny-colsmol"
# SmolVLM's specials (SmolLM2's first, then the Idefics3 image tokens it adds)
SMOLVLM_SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<fake_token_around_image>",
    "<image>",
    "<end_of_utterance>",
    "<global-img>",
    *(f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)),
)
COLIDEFICS3_IMAGE_SEQ_LEN = 4  # (image_size / patch_size)^2 / scale_factor^2


def colidefics3_published_key(mlx_key: str) -> str:
    """mlx-embeddings' names -> colpali-engine's ColIdefics3 (``self.model`` = Idefics3Model)."""
    for mlx_prefix, published in (
        ("vision_model.", "model.vision_model."),
        ("connector.", "model.connector."),
        ("language_model.", "model.text_model."),
    ):
        if mlx_key.startswith(mlx_prefix):
            return published + mlx_key[len(mlx_prefix) :]
    if mlx_key.startswith("linear."):
        return mlx_key
    raise ValueError(f"unexpected parameter {mlx_key}")


def make_tiny_colidefics3(out_dir: Path, *, seed: int = DEFAULT_SEED) -> Path:
    """A tiny ColIdefics3 in the layout of vidore/colSmol-256M merged for inference (as
    vidore/ColSmolVLM-Instruct-500M-base ships it): ``architectures`` ColIdefics3 with
    ``model_type`` idefics3, colpali-engine's weight names (``model.vision_model.*``,
    ``model.connector.*``, ``model.text_model.*``, ``linear.*``; patch embedding in the torch
    layout), a SmolLM2-style byte-level BPE with the Idefics3 image tokens, the Idefics3 image
    processor config (tiles of 32 px, images up to 64 px) and ``image_seq_len``."""
    # (mlx-embeddings' own colidefics3 module does not import with mlx-vlm 0.7; the server's
    # model class is mlx-vlm's Idefics3 + the projection)
    from app.engine.colidefics3 import build_model

    out_dir.mkdir(parents=True, exist_ok=True)
    ids = write_bpe_tokenizer(
        out_dir,
        specials=SMOLVLM_SPECIAL_TOKENS,
        single="$A",
        pair="$A $B:1",
        tokenizer_config={
            "add_prefix_space": False,
            "bos_token": "<|im_start|>",
            "clean_up_tokenization_spaces": False,
            "eos_token": "<end_of_utterance>",
            "extra_special_tokens": ["<fake_token_around_image>", "<image>", "<end_of_utterance>"],
            "legacy": False,
            "model_max_length": 8192,
            "pad_token": "<|im_end|>",
            "processor_class": "Idefics3Processor",
            "tokenizer_class": "GPT2Tokenizer",
            "truncation_side": "left",
            "unk_token": "<|endoftext|>",
            "vocab_size": 49152,
        },
    )
    vocab_size = _round_up(max(ids.values()) + 1, 8)
    text_config = {
        "architectures": ["VLlama3ForCausalLM"],
        "attention_bias": False,
        "bos_token_id": ids["<|im_start|>"],
        "eos_token_id": ids["<end_of_utterance>"],
        "head_dim": 16,
        "hidden_act": "silu",
        "hidden_size": 64,
        "intermediate_size": 128,
        "max_position_embeddings": 8192,
        "mlp_bias": False,
        "model_type": "llama",
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
        "num_key_value_heads": 2,
        "pad_token_id": ids["<|im_end|>"],
        "rms_norm_eps": 1e-05,
        "rope_scaling": None,
        "rope_theta": 100000,
        "tie_word_embeddings": False,
        "vocab_size": vocab_size,
    }
    vision_config = {
        "hidden_act": "gelu_pytorch_tanh",
        "hidden_size": 32,
        "image_size": 32,
        "intermediate_size": 64,
        "layer_norm_eps": 1e-06,
        "model_type": "idefics3_vision",
        "num_attention_heads": 2,
        "num_channels": 3,
        "num_hidden_layers": 2,
        "patch_size": 8,
    }
    config = {
        "architectures": ["ColIdefics3"],
        "image_token_id": ids["<image>"],
        "model_type": "idefics3",
        "pad_token_id": ids["<|im_end|>"],
        "scale_factor": 2,
        "text_config": text_config,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "transformers_version": "4.50.0",
        "use_cache": True,
        "vision_config": vision_config,
        "vocab_size": vocab_size,
    }
    _write_json(out_dir / "config.json", config)
    model = build_model(config)
    params = _random_parameters(model, seed + 8)
    weights = {}
    for k, v in params.items():
        if k.endswith("patch_embedding.weight"):  # MLX (out, kh, kw, in) -> torch (out, in, kh, kw)
            v = v.transpose(0, 3, 1, 2)
        weights[colidefics3_published_key(k)] = v
    _save_weights(out_dir, weights)
    _write_json(
        out_dir / "preprocessor_config.json",
        {
            "do_convert_rgb": True,
            "do_image_splitting": True,
            "do_normalize": True,
            "do_pad": True,
            "do_rescale": True,
            "do_resize": True,
            "image_mean": [0.5, 0.5, 0.5],
            "image_processor_type": "Idefics3ImageProcessor",
            "image_std": [0.5, 0.5, 0.5],
            "max_image_size": {"longest_edge": 32},
            "processor_class": "ColIdefics3Processor",
            "resample": 1,
            "rescale_factor": 1 / 255,
            "size": {"longest_edge": 64},
        },
    )
    _write_json(
        out_dir / "processor_config.json",
        {"image_seq_len": COLIDEFICS3_IMAGE_SEQ_LEN, "processor_class": "ColIdefics3Processor"},
    )
    return out_dir


QWEN3_VL_DIRNAME = "tiny-qwen3-vl-embedding"
# A Qwen2-VL style chat template (system, then the user's images and texts, then the
# generation prompt): what Qwen3-VL's template renders for these messages.
QWEN_VL_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def qwen3_vl_published_key(mlx_key: str) -> str:
    """mlx-vlm's names -> transformers' Qwen3VLForConditionalGeneration names."""
    if mlx_key.startswith("language_model.model."):
        return "model.language_model." + mlx_key[len("language_model.model.") :]
    if mlx_key.startswith("vision_tower."):
        return "model.visual." + mlx_key[len("vision_tower.") :]
    if mlx_key.startswith("language_model.lm_head."):
        return mlx_key[len("language_model.") :]
    raise ValueError(f"unexpected parameter {mlx_key}")


def make_tiny_qwen3_vl(out_dir: Path, *, seed: int = DEFAULT_SEED) -> Path:
    """A tiny Qwen3-VL-Embedding in the layout of Qwen/Qwen3-VL-Embedding-2B: a
    ``Qwen3VLForConditionalGeneration`` checkpoint (``model.visual.*`` with deepstack mergers,
    ``model.language_model.*``, tied embeddings; Conv3d patch embedding in the torch layout),
    the Qwen2 tokenizer with a chat template, the Qwen2-VL image processor config (patch 16)."""
    from mlx_embeddings.models.qwen3_vl import Model, ModelArgs

    out_dir.mkdir(parents=True, exist_ok=True)
    special_ids = write_qwen_tokenizer(out_dir)
    tok_config = json.loads((out_dir / "tokenizer_config.json").read_text())
    tok_config.update(
        chat_template=QWEN_VL_CHAT_TEMPLATE,
        eos_token="<|im_end|>",
        padding_side="right",
        model_max_length=262144,
    )
    tok_config.pop("processor_class", None)
    _write_json(out_dir / "tokenizer_config.json", tok_config)
    vocab_size = _round_up(max(special_ids.values()) + 1, 64)
    text_config = {
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": special_ids["<|endoftext|>"],
        "eos_token_id": special_ids["<|im_end|>"],
        "head_dim": 16,
        "hidden_act": "silu",
        "hidden_size": 64,
        "initializer_range": 0.02,
        "intermediate_size": 128,
        "max_position_embeddings": 262144,
        "model_type": "qwen3_vl_text",
        "num_attention_heads": 4,
        "num_hidden_layers": 3,
        "num_key_value_heads": 2,
        "rms_norm_eps": 1e-06,
        "rope_scaling": {
            "mrope_interleaved": True,
            "mrope_section": [2, 3, 3],
            "rope_type": "default",
        },
        "rope_theta": 5000000,
        "tie_word_embeddings": True,
        "use_cache": True,
        "vocab_size": vocab_size,
    }
    vision_config = {
        "deepstack_visual_indexes": [0, 1],
        "depth": 3,
        "hidden_act": "gelu_pytorch_tanh",
        "hidden_size": 32,
        "in_channels": 3,
        "initializer_range": 0.02,
        "intermediate_size": 64,
        "model_type": "qwen3_vl",
        "num_heads": 2,
        "num_position_embeddings": 64,
        "out_hidden_size": 64,
        "patch_size": 16,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
    }
    config = {
        "architectures": ["Qwen3VLForConditionalGeneration"],
        "image_token_id": special_ids["<|image_pad|>"],
        "model_type": "qwen3_vl",
        "text_config": text_config,
        "tie_word_embeddings": True,
        "torch_dtype": "float32",
        "transformers_version": "4.57.0",
        "video_token_id": special_ids["<|video_pad|>"],
        "vision_config": vision_config,
        "vision_end_token_id": special_ids["<|vision_end|>"],
        "vision_start_token_id": special_ids["<|vision_start|>"],
    }
    _write_json(out_dir / "config.json", config)
    model = Model(ModelArgs.from_dict(dict(config)))
    params = _random_parameters(model, seed + 9)
    weights = {}
    for k, v in params.items():
        if k.endswith(
            "patch_embed.proj.weight"
        ):  # MLX (out, t, h, w, in) -> torch (out, in, t, h, w)
            v = v.transpose(0, 4, 1, 2, 3)
        weights[qwen3_vl_published_key(k)] = v
    _save_weights(out_dir, weights)
    _write_json(
        out_dir / "preprocessor_config.json",
        {
            "do_convert_rgb": True,
            "do_normalize": True,
            "do_rescale": True,
            "do_resize": True,
            "image_mean": [0.5, 0.5, 0.5],
            "image_processor_type": "Qwen2VLImageProcessorFast",
            "image_std": [0.5, 0.5, 0.5],
            "merge_size": 2,
            "patch_size": 16,
            "processor_class": "Qwen3VLProcessor",
            "resample": 3,
            "rescale_factor": 1 / 255,
            "size": {"longest_edge": 16777216, "shortest_edge": 65536},
            "temporal_patch_size": 2,
        },
    )
    return out_dir


SIGLIP_DIRNAME = "tiny-siglip-patch8-32"  # mlx-embeddings reads patch/image size from the name
SIGLIP_TEXT_LENGTH = 16  # text max_position_embeddings: texts are padded to it (64 in SigLIP)


def write_siglip_tokenizer(out_dir: Path, vocab_size: int = 300) -> dict[str, int]:
    """A tiny SentencePiece unigram ``spiece.model`` in the SigLIP layout (``</s>`` is pad and
    eos, ``<unk>``), trained in-process single-threaded (deterministic)."""
    import io

    import sentencepiece as spm

    out_dir.mkdir(parents=True, exist_ok=True)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_corpus_lines()),
        model_writer=model,
        vocab_size=vocab_size,
        model_type="unigram",
        character_coverage=1.0,
        num_threads=1,
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        pad_piece="<pad>",
        eos_piece="</s>",
        unk_piece="<unk>",
        add_dummy_prefix=True,
        minloglevel=2,
    )
    (out_dir / "spiece.model").write_bytes(model.getvalue())
    config = {
        "additional_special_tokens": [],
        "clean_up_tokenization_spaces": True,
        "do_lower_case": True,
        "eos_token": "</s>",
        "model_input_names": ["input_ids"],
        "model_max_length": SIGLIP_TEXT_LENGTH,
        "pad_token": "</s>",
        "processor_class": "SiglipProcessor",
        "sp_model_kwargs": {},
        "tokenizer_class": "SiglipTokenizer",
        "unk_token": "<unk>",
    }
    _write_json(out_dir / "tokenizer_config.json", config)
    _write_json(
        out_dir / "special_tokens_map.json",
        {"eos_token": "</s>", "pad_token": "</s>", "unk_token": "<unk>"},
    )
    return {"<pad>": 0, "</s>": 1, "<unk>": 2}


def siglip_published_key(mlx_key: str) -> str:
    """MLX-internal SigLIP names -> HF ``SiglipModel`` names (inverse of siglip.Model.sanitize)."""
    for inner in ("text_model.text_model.", "vision_model.vision_model."):
        if mlx_key.startswith(inner):
            key = mlx_key[len(inner.split(".")[0]) + 1 :]
            return key.replace("in_proj.weight", "in_proj_weight").replace(
                "in_proj.bias", "in_proj_bias"
            )
    if mlx_key in ("logit_scale", "logit_bias"):
        return mlx_key
    raise ValueError(f"unexpected SigLIP parameter {mlx_key}")


def make_tiny_siglip(out_dir: Path, *, seed: int = DEFAULT_SEED) -> Path:
    """A tiny SigLIP in the layout of google/siglip-base-patch16-224 (``SiglipModel`` weights,
    ``spiece.model``, SiglipImageProcessor settings). The directory name carries
    ``patch<P>-<S>`` because mlx-embeddings 0.1.0 reads the sizes from it."""
    from mlx_embeddings.models.siglip import Model, ModelArgs, TextConfig, VisionConfig

    out_dir.mkdir(parents=True, exist_ok=True)
    write_siglip_tokenizer(out_dir)
    import sentencepiece as spm

    vocab = spm.SentencePieceProcessor(model_file=str(out_dir / "spiece.model")).get_piece_size()
    text = {
        "model_type": "siglip_text_model",
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_attention_heads": 2,
        "num_hidden_layers": 2,
        "max_position_embeddings": SIGLIP_TEXT_LENGTH,
        "vocab_size": vocab,
        "layer_norm_eps": 1e-6,
    }
    vision = {
        "model_type": "siglip_vision_model",
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_attention_heads": 2,
        "num_hidden_layers": 2,
        "image_size": 32,
        "patch_size": 8,
        "num_channels": 3,
        "layer_norm_eps": 1e-6,
    }
    config = {
        "architectures": ["SiglipModel"],
        "initializer_factor": 1.0,
        "model_type": "siglip",
        "text_config": text,
        "torch_dtype": "float32",
        "vision_config": vision,
    }
    _write_json(out_dir / "config.json", config)
    model = Model(ModelArgs(text_config=TextConfig(**text), vision_config=VisionConfig(**vision)))
    params = _random_parameters_siglip(model, seed + 5)
    weights = {siglip_published_key(k): v for k, v in params.items()}
    patch = "vision_model.embeddings.patch_embedding.weight"
    weights[patch] = weights[patch].transpose(0, 3, 1, 2)  # MLX (o, h, w, i) -> torch (o, i, h, w)
    _save_weights(out_dir, weights)
    _write_json(
        out_dir / "preprocessor_config.json",
        {
            "do_normalize": True,
            "do_rescale": True,
            "do_resize": True,
            "image_mean": [0.5, 0.5, 0.5],
            "image_processor_type": "SiglipImageProcessor",
            "image_std": [0.5, 0.5, 0.5],
            "processor_class": "SiglipProcessor",
            "resample": 3,
            "rescale_factor": 1 / 255,
            "size": {"height": 32, "width": 32},
        },
    )
    return out_dir


def _random_parameters_siglip(model: Any, seed: int) -> dict[str, mx.array]:
    """Like _random_parameters, plus SigLIP's probe and logit scale/bias."""
    rng = np.random.default_rng(seed)
    out: dict[str, mx.array] = {}
    for name, value in sorted(tree_flatten(model.parameters())):
        shape = tuple(value.shape)
        if name.endswith("head.probe"):
            arr = rng.normal(0.0, 1.0, size=shape)
        elif name in ("logit_scale", "logit_bias"):
            arr = np.full(shape, math.log(10.0) if name == "logit_scale" else -10.0)
        elif "in_proj" in name and name.endswith("weight"):
            arr = rng.normal(0.0, 2.0 / math.sqrt(shape[1]), size=shape)
        else:
            arr = _draw_param(name, shape, rng)
        out[name] = mx.array(arr.astype(np.float32))
    return out


NEMOTRON_VL_DIRNAME = "tiny-llama-nemotron-vl"
NEMOTRON_VL_SPECIAL_TOKENS: tuple[str, ...] = (
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<img>",
    "</img>",
    "<IMG_CONTEXT>",
)
# LlamaNemotronVLProcessor's settings (processor_config.json); tiles of 32 px, patch 8 and
# pixel shuffle 0.5: 4 image tokens per tile
NEMOTRON_VL_PROCESSOR: dict[str, Any] = {
    "dynamic_image_size": True,
    "image_size": 32,
    "max_input_tiles": 6,
    "norm_type": "siglip",
    "num_image_token": 4,
    "p_max_length": 256,
    "passage_prefix": "passage:",
    "q_max_length": 128,
    "query_prefix": "query:",
    "template": "bidirectional-llama-retriever",
    "use_thumbnail": True,
}


def nemotron_vl_published_key(mlx_key: str) -> str:
    """mlx-embeddings' names -> NeMo Automodel ``LlamaNemotronVLModel`` names (SigLIP's
    ``in_proj_weight``; the language model is a ``LlamaBidirectionalModel``, no ``model.``)."""
    if mlx_key.startswith(("vision_model.vision_model.", "language_model.", "mlp1.")):
        return mlx_key.replace("in_proj.weight", "in_proj_weight").replace(
            "in_proj.bias", "in_proj_bias"
        )
    raise ValueError(f"unexpected parameter {mlx_key}")


def make_tiny_llama_nemotron_vl(out_dir: Path, *, seed: int = DEFAULT_SEED) -> Path:
    """A tiny Llama-Nemotron-Embed-VL in the layout of nvidia/llama-nemotron-embed-vl-1b-v2 as
    NeMo Automodel 0.7.0's ``LlamaNemotronVLModel`` saves it: ``vision_model.vision_model.*``
    (``SiglipVisionModel``, torch conv layout), ``mlp1.{0,1,3}.*`` (LayerNorm, Linear, GELU,
    Linear after the pixel shuffle), ``language_model.*`` (``LlamaBidirectionalModel``, llama3
    RoPE); config with ``vision_config`` / ``llm_config``, ``img_context_token_id``, mean
    pooling; the Llama-3 style tokenizer with ``<img>`` / ``</img>`` / ``<IMG_CONTEXT>``; the
    processor's settings in ``processor_config.json``."""
    from mlx_embeddings.models.llama_nemotron_vl import Model, ModelArgs

    out_dir.mkdir(parents=True, exist_ok=True)
    ids = _write_llama3_tokenizer(out_dir, NEMOTRON_VL_SPECIAL_TOKENS, padding_side="left")
    vision_config = {
        "attention_dropout": 0.0,
        "hidden_act": "gelu_pytorch_tanh",
        "hidden_size": 32,
        "image_size": 32,
        "intermediate_size": 64,
        "layer_norm_eps": 1e-06,
        "model_type": "siglip_vision_model",
        "num_attention_heads": 2,
        "num_channels": 3,
        "num_hidden_layers": 2,
        "patch_size": 8,
    }
    llm_config = _llama_bidirec_config(ids, tie_word_embeddings=False)
    config = {
        "architectures": ["LlamaNemotronVLModel"],
        "downsample_ratio": 0.5,
        "dynamic_image_size": True,
        "force_image_size": 32,
        "img_context_token_id": ids["<IMG_CONTEXT>"],
        "llm_config": llm_config,
        "max_dynamic_patch": 6,
        "max_input_tiles": 6,
        "min_dynamic_patch": 1,
        "model_type": "llama_nemotron_vl",
        "p_max_length": NEMOTRON_VL_PROCESSOR["p_max_length"],
        "passage_prefix": "passage:",
        "pooling": "avg",
        "q_max_length": NEMOTRON_VL_PROCESSOR["q_max_length"],
        "query_prefix": "query:",
        "select_layer": -1,
        "template": "bidirectional-llama-retriever",
        "torch_dtype": "float32",
        "use_thumbnail": True,
        "vision_config": vision_config,
    }
    _write_json(out_dir / "config.json", config)
    model = Model(ModelArgs.from_dict(dict(config)))
    rng = np.random.default_rng(seed + 11)
    weights: dict[str, mx.array] = {}
    for name, value in sorted(tree_flatten(model.parameters())):
        shape = tuple(value.shape)
        if name.endswith("head.probe"):
            arr = rng.normal(0.0, 1.0, size=shape)
        elif name == "mlp1.0.weight":  # the projector's LayerNorm
            arr = 1.0 + 0.1 * rng.normal(size=shape)
        elif "in_proj" in name and name.endswith("weight"):
            arr = rng.normal(0.0, 2.0 / math.sqrt(shape[1]), size=shape)
        else:
            arr = _draw_param(name, shape, rng)
        if name.endswith("patch_embedding.weight"):  # MLX (o, h, w, i) -> torch (o, i, h, w)
            arr = arr.transpose(0, 3, 1, 2)
        weights[nemotron_vl_published_key(name)] = mx.array(arr.astype(np.float32))
    _save_weights(out_dir, weights)
    _write_json(
        out_dir / "processor_config.json",
        {"processor_class": "LlamaNemotronVLProcessor", **NEMOTRON_VL_PROCESSOR},
    )
    return out_dir


TEXT_FAMILY_BUILDERS = {
    "xlm_roberta": ("tiny-xlm-roberta", make_tiny_xlm_roberta),
    "modernbert": ("tiny-modernbert", make_tiny_modernbert),
    "qwen3": ("tiny-qwen3", make_tiny_qwen3),
    "gemma3_text": ("tiny-embeddinggemma", make_tiny_gemma3),
    "llama_bidirec": ("tiny-llama-bidirec", make_tiny_llama_bidirec),
}


# --------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------


def make_all(
    out_dir: Path, *, processor_layout: ProcessorLayout = "preprocessor", seed: int = DEFAULT_SEED
) -> dict[str, Path]:
    """Write every tiny model under ``out_dir``; return ``{family: path}`` (``colqwen``,
    ``bert``, then the families of ``TEXT_FAMILY_BUILDERS``)."""
    out_dir = Path(out_dir)
    return {
        "colqwen": make_tiny_colqwen(
            out_dir / COLQWEN_DIRNAME, processor_layout=processor_layout, seed=seed
        ),
        "bert": make_tiny_bert(out_dir / BERT_DIRNAME, seed=seed),
        **{
            family: build(out_dir / dirname, seed=seed)
            for family, (dirname, build) in TEXT_FAMILY_BUILDERS.items()
        },
        "siglip": make_tiny_siglip(out_dir / SIGLIP_DIRNAME, seed=seed),
        "lfm2": make_tiny_lfm2_colbert(out_dir / LFM2_COLBERT_DIRNAME, seed=seed),
        "colidefics3": make_tiny_colidefics3(out_dir / COLIDEFICS3_DIRNAME, seed=seed),
        "qwen3_vl": make_tiny_qwen3_vl(out_dir / QWEN3_VL_DIRNAME, seed=seed),
        "llama_nemotron_vl": make_tiny_llama_nemotron_vl(out_dir / NEMOTRON_VL_DIRNAME, seed=seed),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dir", type=Path, help="directory to write the tiny models into")
    parser.add_argument(
        "--processor-layout",
        choices=["preprocessor", "processor"],
        default="preprocessor",
        help="write the image processor settings as preprocessor_config.json (default) or "
        "nested under 'image_processor' in processor_config.json (transformers 5 layout)",
    )
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    args = parser.parse_args(argv)

    start = time.perf_counter()
    paths = make_all(args.dir, processor_layout=args.processor_layout, seed=args.seed)
    elapsed = time.perf_counter() - start
    for name, path in paths.items():
        print(f"{name}: {path}")
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            print(f"  {f.relative_to(path)}  ({f.stat().st_size} bytes)")
    print(f"built in {elapsed:.2f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
