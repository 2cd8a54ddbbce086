"""Pooled text models of the BERT family through mlx-embeddings (one vector per input).

Pooling and normalisation follow the model's sentence-transformers files (modules.json,
1_Pooling/config.json, sentence_bert_config.json); a directory without them gets mean pooling
and L2 normalisation, as all-MiniLM-style models use.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import mlx.core as mx
import numpy as np

from app.engine.base import Embedding, EngineInput, ImageInput, ModelInfo, Prepared, TextInput
from app.engine.cpu_patch import install_cpu_kernels, warm_up
from app.engine.loading import apply_dtype, dtype_name, load_mlx_model, weights_fingerprint
from app.errors import InputTooLong, InvalidTokenIds, UnsupportedInput
from app.settings import Settings

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


class PooledTextAdapter:
    def __init__(self, path: Path, settings: Settings) -> None:
        from transformers import AutoTokenizer

        self.model = load_mlx_model(path)
        self.dtype = apply_dtype(self.model, settings.dtype)
        self.cpu_kernels = install_cpu_kernels(self.model, settings.cpu_kernels)
        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        self.pooling, self.normalize, st_max = read_st_config(path)
        config = json.loads((path / "config.json").read_text())
        limits = [settings.max_tokens_per_input, config.get("max_position_embeddings", 512)]
        if st_max:
            limits.append(int(st_max))
        self.max_tokens = min(limits)
        self.vocab_size = int(config.get("vocab_size", self.tokenizer.vocab_size))
        self.pad_id = self.tokenizer.pad_token_id or 0
        self.cls_id = self.tokenizer.cls_token_id
        self.sep_id = self.tokenizer.sep_token_id
        dim = int(config.get("hidden_size"))
        self.info = ModelInfo(
            name=settings.model_name,
            kind="pooled",
            dim=dim,
            modalities=("text",),
            max_tokens=self.max_tokens,
            fingerprint=weights_fingerprint(settings.model, path)
            + f"|{dtype_name(self.dtype)}|{self.pooling}|{self.normalize}",
            dtype=dtype_name(self.dtype),
            extra={
                "architecture": config.get("model_type", "bert"),
                "pooling": self.pooling,
                "normalized": self.normalize,
            },
        )
        if self.cpu_kernels.startswith("on"):
            warm_up(self, [TextInput("warm up")])

    def prepare(self, item: EngineInput, *, truncate: bool = False) -> Prepared:
        if isinstance(item, ImageInput):
            raise UnsupportedInput(f"{self.info.name} is a text model: images are not supported")
        if isinstance(item, TextInput):
            ids = list(self.tokenizer(item.text, add_special_tokens=True)["input_ids"])
        elif hasattr(item, "ids"):
            bad = [i for i in item.ids if not 0 <= i < self.vocab_size]
            if bad:
                raise InvalidTokenIds(f"token ids must be in [0, {self.vocab_size}); got {bad[:5]}")
            ids = list(item.ids)
            if self.cls_id is not None and (not ids or ids[0] != self.cls_id):
                ids = [self.cls_id] + ids
            if self.sep_id is not None and ids[-1] != self.sep_id:
                ids = ids + [self.sep_id]
        else:
            raise UnsupportedInput(f"unsupported input type {type(item).__name__}")
        if len(ids) > self.max_tokens:
            if not truncate:
                raise InputTooLong(
                    f"this input is {len(ids)} tokens long; the limit for this model is "
                    f'{self.max_tokens} tokens. Shorten it or send "truncate": true.'
                )
            tail = [self.sep_id] if self.sep_id is not None else []
            ids = ids[: self.max_tokens - len(tail)] + tail
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
        out = self.model(mx.array(ids), attention_mask=m)
        hidden = out.last_hidden_state.astype(mx.float32)
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
        if self.normalize:
            pooled = pooled / mx.maximum(mx.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)
        vecs = np.array(pooled)
        return [
            Embedding(vectors=np.ascontiguousarray(vecs[b], dtype=np.float32), n_tokens=lengths[b])
            for b in range(B)
        ]
