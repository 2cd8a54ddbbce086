"""The pooled text families mlx-embeddings ships, and what each needs to match its reference.

One ``TextFamily`` per config.json ``model_type``: how to get the per-token hidden states out of
mlx-embeddings' model class (pooling, dense layers and normalisation are ours, read from the
sentence-transformers files), which config keys to translate before loading, and which fixes to
apply to mlx-embeddings' forward where it differs from the reference (measured before/after in
the README's fidelity table). Batches are always padded on the RIGHT (see ``qwen3``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import mlx.core as mx
import mlx.nn as nn

log = logging.getLogger(__name__)

HiddenStates = Callable[[nn.Module, mx.array, mx.array], mx.array]


def _last_hidden_state(model: nn.Module, ids: mx.array, mask: mx.array) -> mx.array:
    return model(ids, attention_mask=mask).last_hidden_state


def _inner_model(model: nn.Module, ids: mx.array, mask: mx.array) -> mx.array:
    out = model.model(ids, attention_mask=mask)
    return out["last_hidden_state"] if isinstance(out, dict) else out


def _no_overrides(config: dict[str, Any]) -> dict[str, Any]:
    return {}


def _no_fixes(model: nn.Module, config: dict[str, Any]) -> list[str]:
    return []


def modernbert_config_overrides(config: dict[str, Any]) -> dict[str, Any]:
    """mlx-embeddings reads the transformers-4 keys (global_rope_theta, local_rope_theta,
    local_attention, global_attn_every_n_layers); a transformers-5 config has rope_parameters,
    layer_types and sliding_window instead. Translate them (the 4 keys win when present)."""
    out: dict[str, Any] = {}
    rope = config.get("rope_parameters") or {}
    if "global_rope_theta" not in config and "full_attention" in rope:
        out["global_rope_theta"] = float(rope["full_attention"]["rope_theta"])
    if "local_rope_theta" not in config and "sliding_attention" in rope:
        out["local_rope_theta"] = float(rope["sliding_attention"]["rope_theta"])
    if "local_attention" not in config and config.get("sliding_window"):
        out["local_attention"] = 2 * int(config["sliding_window"])
    types = config.get("layer_types")
    if "global_attn_every_n_layers" not in config and types:
        full = [i for i, t in enumerate(types) if t == "full_attention"]
        every = full[1] - full[0] if len(full) > 1 else len(types)
        expected = [i % every == 0 for i in range(len(types))]
        if [t == "full_attention" for t in types] != expected:
            raise ValueError(f"unsupported ModernBERT layer_types {types}")
        out["global_attn_every_n_layers"] = every
    return out


def modernbert_fixes(model: nn.Module, config: dict[str, Any]) -> list[str]:
    """mlx-embeddings 0.1.0 computes the MLP GELU with the tanh approximation; ModernBERT's
    ``hidden_activation`` is exact ``gelu`` (erf). Use the activation the config names."""
    act = config.get("hidden_activation", config.get("hidden_act", "gelu"))
    # (mlx's GELU "precise" is the tanh approximation; "none" is exact)
    approx = {"gelu": "none", "gelu_python": "none", "gelu_pytorch_tanh": "precise"}.get(act)
    if approx is None:
        raise ValueError(f"unsupported ModernBERT hidden_activation {act!r}")
    for layer in model.model.layers:
        layer.mlp.act = nn.GELU(approx=approx)
    if approx == "precise":
        return []
    return [f"MLP activation {act} (mlx-embeddings: tanh-approximate GELU)"]


def gemma3_config_overrides(config: dict[str, Any]) -> dict[str, Any]:
    """mlx-lm's Gemma3 reads ``sliding_window_pattern`` (which layers are global and take the
    global RoPE base); published configs give ``layer_types`` (and ``_sliding_window_pattern``)."""
    types = config.get("layer_types")
    if not types or "sliding_window_pattern" in config:
        return {}
    pattern = config.get("_sliding_window_pattern") or (types.index("full_attention") + 1)
    expected = [
        "full_attention" if (i + 1) % pattern == 0 else "sliding_attention"
        for i in range(len(types))
    ]
    if list(types) != expected:
        raise ValueError(f"unsupported Gemma3 layer_types {types}")
    return {"sliding_window_pattern": int(pattern)}


def gemma3_hidden_states(model: nn.Module, ids: mx.array, mask: mx.array) -> mx.array:
    """EmbeddingGemma's bidirectional encoder with the per-layer masks of transformers:
    global layers see every real token, sliding layers the real tokens with |q - k| < window.
    (mlx-embeddings 0.1.0 gives every layer the global mask, so inputs longer than the window
    differ from the reference.) Each query also sees itself, so no row is fully masked."""
    inner = model.model
    config = inner.config
    h = inner.embed_tokens(ids)
    h = h * mx.array(config.hidden_size**0.5, inner.embed_tokens.weight.dtype).astype(h.dtype)
    L = ids.shape[1]
    keys = mask[:, None, None, :] > 0  # (B, 1, 1, L)
    pos = mx.arange(L)
    eye = (pos[:, None] == pos[None, :])[None, None]
    window = (mx.abs(pos[:, None] - pos[None, :]) < inner.bidirectional_window)[None, None]
    neg = mx.array(-mx.inf, dtype=h.dtype)
    zero = mx.array(0.0, dtype=h.dtype)
    global_mask = mx.where(keys | eye, zero, neg)
    sliding_mask = mx.where((keys & window) | eye, zero, neg)
    pattern = config.sliding_window_pattern
    for i, layer in enumerate(inner.layers):
        is_global = (i + 1) % pattern == 0
        h = layer(h, global_mask if is_global else sliding_mask, None)
    return inner.norm(h)


def gemma3_fixes(model: nn.Module, config: dict[str, Any]) -> list[str]:
    """transformers: with ``use_bidirectional_attention`` a sliding layer sees the tokens with
    |q - k| < sliding_window // 2 + 1 (else the causal window, which EmbeddingGemma never uses)."""
    if not config.get("use_bidirectional_attention", False):
        raise ValueError("only bidirectional Gemma3 text models (EmbeddingGemma) are supported")
    model.model.bidirectional_window = int(config["sliding_window"]) // 2 + 1
    return [
        "sliding-window layers see |q - k| <= sliding_window / 2 (mlx-embeddings: every layer "
        "sees the whole input)"
    ]


def gemma3_dense(model: nn.Module) -> list[nn.Module]:
    """The sentence-transformers Dense layers (2_Dense, 3_Dense) mlx-embeddings loads."""
    return list(getattr(model, "dense", []))


def _no_dense(model: nn.Module) -> list[nn.Module]:
    return []


@dataclass(frozen=True)
class TextFamily:
    name: str
    reference: str
    hidden_states: HiddenStates
    config_overrides: Callable[[dict[str, Any]], dict[str, Any]] = _no_overrides
    fixes: Callable[[nn.Module, dict[str, Any]], list[str]] = _no_fixes
    # positions taken by the offset of position ids (XLM-R: padding_idx + 1)
    position_offset: Callable[[dict[str, Any]], int] = lambda c: 0
    # the modules.json Dense layers, in order, as mlx-embeddings loaded them
    dense: Callable[[nn.Module], list[nn.Module]] = _no_dense
    matryoshka: bool = False


TEXT_FAMILIES: dict[str, TextFamily] = {
    "bert": TextFamily("bert", "sentence-transformers (BertModel)", _last_hidden_state),
    "xlm_roberta": TextFamily(
        "xlm_roberta",
        "sentence-transformers (XLMRobertaModel)",
        _last_hidden_state,
        position_offset=lambda c: int(c.get("pad_token_id", 1)) + 1,
    ),
    "modernbert": TextFamily(
        "modernbert",
        "sentence-transformers (ModernBertModel)",
        # the encoder itself: mlx-embeddings' Model pools into last_hidden_state for a
        # ModernBertModel directory
        _inner_model,
        config_overrides=modernbert_config_overrides,
        fixes=modernbert_fixes,
    ),
    "qwen3": TextFamily(
        "qwen3",
        "sentence-transformers (Qwen3Model, last-token pooling)",
        # the decoder itself, right-padded: mlx-embeddings gives NaN for the shorter rows of a
        # left-padded batch (fully masked pad rows), and the published tokenizers pad left
        _inner_model,
        matryoshka=True,
    ),
    "llama_bidirec": TextFamily(
        "llama_bidirec",
        "NVIDIA LlamaBidirectionalModel (remote code) = transformers LlamaModel with the "
        "padding mask instead of the causal one; sentence-transformers pooling",
        _last_hidden_state,
    ),
    "gemma3_text": TextFamily(
        "gemma3_text",
        "sentence-transformers (Gemma3TextModel, bidirectional; EmbeddingGemma)",
        gemma3_hidden_states,
        config_overrides=gemma3_config_overrides,
        fixes=gemma3_fixes,
        dense=gemma3_dense,
        matryoshka=True,
    ),
}


def text_family(model_type: str) -> TextFamily | None:
    return TEXT_FAMILIES.get(model_type.replace("-", "_"))
