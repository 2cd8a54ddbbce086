"""Pooled text models through mlx-embeddings (one vector per input): the families of
``app.engine.families`` (bert, xlm_roberta, modernbert, qwen3).

Pooling and normalisation follow the model's sentence-transformers files (modules.json,
1_Pooling/config.json, sentence_bert_config.json); a directory without them gets mean pooling
and L2 normalisation, as all-MiniLM-style models use.
"""

from __future__ import annotations

import hashlib
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
from app.engine.cpu_patch import install_cpu_kernels, warm_up
from app.engine.families import text_family
from app.engine.loading import apply_dtype, dtype_name, load_mlx_model, weights_fingerprint
from app.engine.prompts import read_st_prompts
from app.errors import InputTooLong, InvalidRequest, InvalidTokenIds, UnsupportedInput
from app.settings import Settings
from app.token_ids import out_of_vocab_message

log = logging.getLogger(__name__)


def read_st_config(path: Path) -> tuple[str, bool, int | None]:
    """(pooling mode, normalize, max_seq_length) from the sentence-transformers files."""
    pooling, normalize, max_len = "mean", True, None
    modules_file = path / "modules.json"
    if modules_file.exists():
        modules = json.loads(modules_file.read_text())
        normalize = any(m.get("type", "").endswith(".Normalize") for m in modules)
        for m in modules:
            if m.get("type", "").endswith(".Pooling"):
                cfg_file = path / m.get("path", "") / "config.json"
                if cfg_file.exists():
                    cfg = json.loads(cfg_file.read_text())
                    if cfg.get("pooling_mode_cls_token"):
                        pooling = "cls"
                    elif cfg.get("pooling_mode_max_tokens"):
                        pooling = "max"
                    elif cfg.get("pooling_mode_lasttoken"):
                        pooling = "last"
                    else:
                        pooling = "mean"
    sb = path / "sentence_bert_config.json"
    if sb.exists():
        max_len = json.loads(sb.read_text()).get("max_seq_length")
    return pooling, normalize, max_len


IDENTITY = ("torch.nn.modules.linear.Identity", "torch.nn.Identity")


def read_st_dense(path: Path) -> list[dict[str, Any]]:
    """The configs of the sentence-transformers Dense modules in modules.json, in order.
    Only bias-free identity-activation layers are supported (EmbeddingGemma's)."""
    modules_file = path / "modules.json"
    if not modules_file.exists():
        return []
    dense = []
    for m in json.loads(modules_file.read_text()):
        if m.get("type", "").endswith(".Dense"):
            cfg = json.loads((path / m["path"] / "config.json").read_text())
            if cfg.get("activation_function", IDENTITY[0]) not in IDENTITY:
                raise ValueError(f"unsupported Dense activation {cfg['activation_function']}")
            dense.append(cfg)
    return dense


def load_tokenizer(path: Path) -> Any:
    """AutoTokenizer; for a model type transformers does not know (remote-code models such as
    llama_bidirec, whose AutoConfig fails) the tokenizer.json through PreTrainedTokenizerFast."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    try:
        return AutoTokenizer.from_pretrained(str(path))
    except (ValueError, KeyError, AttributeError) as exc:
        if not (path / "tokenizer.json").exists():
            raise
        log.info("AutoTokenizer failed for %s (%s); using tokenizer.json", path, exc)
        return PreTrainedTokenizerFast.from_pretrained(str(path))


def special_tokens_around(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The special token ids the tokenizer puts before and after a text (e.g. [CLS] / [SEP],
    <s> / </s>, or only <|endoftext|> after), found by tokenizing a probe both ways."""
    probe = "hello world"
    plain = list(tokenizer(probe, add_special_tokens=False)["input_ids"])
    full = list(tokenizer(probe, add_special_tokens=True)["input_ids"])
    for i in range(len(full) - len(plain) + 1):
        if full[i : i + len(plain)] == plain:
            return full[:i], full[i + len(plain) :]
    raise ValueError("cannot tell the tokenizer's special tokens apart from the text")


class PooledTextAdapter:
    def __init__(self, path: Path, settings: Settings) -> None:
        config = json.loads((path / "config.json").read_text())
        model_type = str(config.get("model_type", "bert"))
        family = text_family(model_type)
        if family is None:
            raise ValueError(f"no pooled text family for model type {model_type!r}")
        self.family = family
        overrides = family.config_overrides(config)
        self.model = load_mlx_model(path, overrides)
        self.fixes = family.fixes(self.model, {**config, **overrides})
        for fix in self.fixes:
            log.info("%s: fixed mlx-embeddings' forward: %s", family.name, fix)
        self.dtype = apply_dtype(self.model, settings.dtype)
        self.cpu_kernels = install_cpu_kernels(self.model, settings.cpu_kernels)
        dense_configs = read_st_dense(path)
        self.dense = family.dense(self.model)
        if len(self.dense) != len(dense_configs):
            raise ValueError(
                f"modules.json has {len(dense_configs)} Dense layers; the {family.name} model "
                f"loaded {len(self.dense)}"
            )
        for layer, cfg in zip(self.dense, dense_configs, strict=True):
            if tuple(layer.weight.shape) != (cfg["out_features"], cfg["in_features"]):
                raise ValueError(f"Dense layer shape {layer.weight.shape} does not match {cfg}")
        self.tokenizer = load_tokenizer(path)
        self.pooling, self.normalize, st_max = read_st_config(path)
        self.prompts, self.default_prompt_name = read_st_prompts(path)
        positions = int(config.get("max_position_embeddings", 512)) - family.position_offset(config)
        limits = [settings.max_tokens_per_input, positions]
        if st_max:
            limits.append(int(st_max))
        self.max_tokens = min(limits)
        self.vocab_size = int(config.get("vocab_size", self.tokenizer.vocab_size))
        pad = self.tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else config.get("pad_token_id") or 0)
        self.prefix_ids, self.suffix_ids = special_tokens_around(self.tokenizer)
        self._prompt_ids = {
            name: list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
            for name, text in self.prompts.items()
        }
        dim = (
            int(dense_configs[-1]["out_features"]) if dense_configs else int(config["hidden_size"])
        )
        prompts_digest = hashlib.sha256(
            json.dumps(self.prompts, sort_keys=True).encode()
        ).hexdigest()[:12]
        self.info = ModelInfo(
            name=settings.model_name,
            kind="pooled",
            dim=dim,
            modalities=("text",),
            max_tokens=self.max_tokens,
            fingerprint=weights_fingerprint(settings.model, path)
            + f"|{dtype_name(self.dtype)}|{self.pooling}|{self.normalize}|{prompts_digest}",
            dtype=dtype_name(self.dtype),
            extra={
                "architecture": model_type,
                "family": family.name,
                "reference": family.reference,
                "pooling": self.pooling,
                "normalized": self.normalize,
                "prompts": dict(self.prompts),
                "default_prompt_name": self.default_prompt_name,
                "matryoshka": family.matryoshka,
                "fixes": list(self.fixes),
            },
        )
        if self.cpu_kernels.startswith("on"):
            warm_up(self, [TextInput("warm up")])

    def _prompt(self, name: str | None) -> tuple[str, list[int]]:
        if name is None:
            return "", []
        if name not in self.prompts:
            raise InvalidRequest(
                f"model {self.info.name!r} has no prompt {name!r}", param="prompt_name"
            )
        return self.prompts[name], self._prompt_ids[name]

    def prepare(self, item: EngineInput, *, truncate: bool = False) -> Prepared:
        if isinstance(item, ImageInput):
            raise UnsupportedInput(f"{self.info.name} is a text model: images are not supported")
        prefix, suffix = self.prefix_ids, self.suffix_ids
        if isinstance(item, TextInput):
            prompt, _ = self._prompt(item.prompt_name)
            # sentence-transformers prepends the prompt to the text, then tokenizes
            body = list(self.tokenizer(prompt + item.text, add_special_tokens=False)["input_ids"])
        elif isinstance(item, TokenInput):
            _, prompt_ids = self._prompt(item.prompt_name)
            bad = [i for i in item.ids if not 0 <= i < self.vocab_size]
            if bad:
                raise InvalidTokenIds(out_of_vocab_message(self.vocab_size, bad))
            body = list(item.ids)
            # ids that already carry the special tokens keep them
            if prefix and body[: len(prefix)] == prefix:
                body = body[len(prefix) :]
            if suffix and len(body) >= len(suffix) and body[-len(suffix) :] == suffix:
                body = body[: -len(suffix)]
            body = prompt_ids + body
        else:
            raise UnsupportedInput(f"unsupported input type {type(item).__name__}")
        n = len(prefix) + len(body) + len(suffix)
        if n > self.max_tokens:
            if not truncate:
                raise InputTooLong(
                    f"this input is {n} tokens long; the limit for this model is "
                    f'{self.max_tokens} tokens. Shorten it or send "truncate": true.'
                )
            body = body[: self.max_tokens - len(prefix) - len(suffix)]
        ids = prefix + body + suffix
        return Prepared(n_tokens=len(ids), payload=np.asarray(ids, dtype=np.int32), kind="text")

    def forward(self, batch: list[Prepared]) -> list[Embedding]:
        lengths = [len(p.payload) for p in batch]
        B, L = len(batch), max(lengths)
        ids = np.full((B, L), self.pad_id, dtype=np.int32)
        mask = np.zeros((B, L), dtype=np.float32)
        for b, p in enumerate(batch):
            ids[b, : lengths[b]] = p.payload
            mask[b, : lengths[b]] = 1.0
        m = mx.array(mask)
        # right padding: the real tokens of each row come first (last-token pooling below)
        hidden = self.family.hidden_states(self.model, mx.array(ids), m).astype(mx.float32)
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        elif self.pooling == "max":
            pooled = mx.max(mx.where(m[..., None] > 0, hidden, -1e9), axis=1)
        elif self.pooling == "last":
            pooled = hidden[mx.arange(B), mx.array(np.array(lengths) - 1)]
        else:
            pooled = mx.sum(hidden * m[..., None], axis=1) / mx.maximum(
                mx.sum(m, axis=1, keepdims=True), 1e-9
            )
        for layer in self.dense:
            pooled = layer(pooled)
        if self.normalize:
            pooled = pooled / mx.maximum(mx.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)
        vecs = np.array(pooled)
        return [
            Embedding(vectors=np.ascontiguousarray(vecs[b], dtype=np.float32), n_tokens=lengths[b])
            for b in range(B)
        ]
