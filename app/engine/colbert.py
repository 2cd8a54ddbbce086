"""Multi-vector text models in pylate's ColBERT layout (LFM2-ColBERT: ``model_type`` lfm2).

pylate's ``ColBERT.encode`` is the reference: the text stripped and tokenized with
``max_length = query_length - 1`` (queries) or ``document_length - 1`` (documents), the
``[Q] `` / ``[D] `` prefix token inserted after the first token, queries padded to
``query_length`` with the pad token pylate picks (mask, else eos) when ``do_query_expansion``
(the expansion tokens are masked out of attention unless ``attend_to_expansion_tokens``, yet
their vectors are returned), then the backbone with that attention mask, the ``1_Dense``
projection and per-token L2 normalisation. Queries keep every token; documents drop padding and
the ``skiplist_words`` tokens (punctuation).

The LFM2 forward is ours, on mlx-embeddings' modules and weights: mlx-embeddings 0.1.0 runs the
decoder causal-only and never passes the attention mask, so the masked expansion tokens of a
query (and any padding of a batch) are attended to and flow through the short convolutions;
transformers' ``Lfm2Model`` (what pylate runs) masks them out of attention and zeroes them
before each convolution.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
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
from app.engine.loading import apply_dtype, dtype_name, load_mlx_model, weights_fingerprint
from app.engine.multivector import causal_padding_mask, l2_normalized, right_padded
from app.engine.pooled import load_tokenizer, read_st_dense, special_tokens_around
from app.errors import InputTooLong, InvalidRequest, InvalidTokenIds, UnsupportedInput
from app.settings import Settings
from app.token_ids import out_of_vocab_message

log = logging.getLogger(__name__)

# pylate's defaults for keys a config_sentence_transformers.json leaves out
PYLATE_DEFAULTS: dict[str, Any] = {
    "query_prefix": "[Q] ",
    "document_prefix": "[D] ",
    "query_length": 32,
    "document_length": 180,
    "attend_to_expansion_tokens": False,
    "do_query_expansion": True,
    "skiplist_words": list("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"),
}


def read_colbert_settings(path: Path) -> dict[str, Any]:
    f = path / "config_sentence_transformers.json"
    config = json.loads(f.read_text()) if f.exists() else {}
    # a missing or null key takes pylate's default
    out = {k: v if config.get(k) is None else config[k] for k, v in PYLATE_DEFAULTS.items()}
    if not out["do_query_expansion"]:
        out["attend_to_expansion_tokens"] = False
    return out


def lfm2_hidden_states(model: nn.Module, ids: np.ndarray, attention: np.ndarray) -> mx.array:
    """transformers' Lfm2Model with an attention mask: causal + key padding mask in the
    attention layers, masked positions zeroed at the input of each short convolution."""
    inner = model.model
    h = inner.embed_tokens(mx.array(ids))
    mask = causal_padding_mask(attention > 0)
    keep = mx.array(attention)[..., None].astype(h.dtype)
    for layer in inner.layers:
        x = layer.operator_norm(h)
        if layer.is_attention_layer:
            r = layer.self_attn(x, mask=mask, cache=None)
        else:
            r = layer.conv(x * keep, mask=None, cache=None)
        h = h + r
        h = h + layer.feed_forward(layer.ffn_norm(h))
    return inner.embedding_norm(h)


# config.json model_type -> (reference, per-token states)
COLBERT_BACKBONES = {
    "lfm2": ("pylate 1.6.0 ColBERT (transformers Lfm2Model + 1_Dense)", lfm2_hidden_states),
}


@dataclass
class ColbertPayload:
    input_ids: np.ndarray  # int32 (n,)
    attention: np.ndarray  # float32 0/1 (n,): the model's attention mask
    keep: np.ndarray  # bool (n,): the tokens whose vectors are returned


class ColbertTextAdapter:
    def __init__(self, path: Path, settings: Settings) -> None:
        config = json.loads((path / "config.json").read_text())
        self.model_type = str(config.get("model_type"))
        if self.model_type not in COLBERT_BACKBONES:
            raise ValueError(f"no ColBERT backbone for model type {self.model_type!r}")
        self.reference, self.hidden_states = COLBERT_BACKBONES[self.model_type]
        dense = read_st_dense(path)
        if len(dense) != 1:
            raise ValueError(f"expected one Dense module in modules.json, found {len(dense)}")
        if dense[0].get("bias") or dense[0].get("use_residual"):
            raise ValueError(f"unsupported ColBERT Dense layer {dense[0]} (bias / residual)")
        self.dim = int(dense[0]["out_features"])
        self.model = load_mlx_model(path, {"out_features": self.dim})
        self.dtype = apply_dtype(self.model, settings.dtype)
        self.cpu_kernels = install_cpu_kernels(self.model, settings.cpu_kernels)
        (layer,) = self.model.dense
        if tuple(layer.weight.shape) != (self.dim, int(dense[0]["in_features"])):
            raise ValueError(f"Dense weight {layer.weight.shape} does not match {dense[0]}")

        self.tokenizer = load_tokenizer(path)
        tok = self.tokenizer
        self.settings = read_colbert_settings(path)
        s = self.settings
        if s["do_query_expansion"] and tok.padding_side != "right":
            raise ValueError("query expansion with a left-padding tokenizer is not supported")
        self.vocab_size = int(config.get("vocab_size", len(tok)))
        self.prefix_ids: dict[str, int | None] = {}
        for role in ("query", "document"):
            prefix = s[f"{role}_prefix"]
            if not prefix:
                self.prefix_ids[role] = None
                continue
            pid = tok.convert_tokens_to_ids(prefix)
            if pid is None or pid == tok.unk_token_id or pid >= self.vocab_size:
                # pylate would add it as a new, untrained token
                raise ValueError(f"the {role} prefix {prefix!r} is not a token of the tokenizer")
            self.prefix_ids[role] = int(pid)
        # pylate pads query expansions with the mask token, else eos
        pad = tok.mask_token_id if tok.mask_token_id is not None else tok.eos_token_id
        if pad is None:
            pad = tok.pad_token_id
        if pad is None:
            raise ValueError("the tokenizer has no mask, eos or pad token to pad queries with")
        self.pad_id = int(pad)
        self.skiplist = {
            int(i)
            for i in (tok.convert_tokens_to_ids(w) for w in s["skiplist_words"])
            if i is not None
        }
        sb = path / "sentence_bert_config.json"
        self.lower_case = bool(sb.exists() and json.loads(sb.read_text()).get("do_lower_case"))
        self.specials = special_tokens_around(tok)
        self.lengths = {"query": int(s["query_length"]), "document": int(s["document_length"])}
        self.max_tokens = min(settings.max_tokens_per_input, max(self.lengths.values()))
        digest = hashlib.sha256(json.dumps(s, sort_keys=True).encode()).hexdigest()[:12]
        self.info = ModelInfo(
            name=settings.model_name,
            kind="multi_vector",
            dim=self.dim,
            modalities=("text",),
            max_tokens=self.max_tokens,
            fingerprint=weights_fingerprint(settings.model, path)
            + f"|{dtype_name(self.dtype)}|{digest}",
            dtype=dtype_name(self.dtype),
            extra={
                "architecture": self.model_type,
                "family": f"{self.model_type} (ColBERT)",
                "reference": self.reference,
                # prepended as one token after the first, as pylate does
                "prompts": {"query": s["query_prefix"], "document": s["document_prefix"]},
                "default_prompt_name": "query",
                "query_length": self.lengths["query"],
                "document_length": self.lengths["document"],
                "query_expansion": bool(s["do_query_expansion"]),
                "attend_to_expansion_tokens": bool(s["attend_to_expansion_tokens"]),
                "fixes": [
                    "attention mask honoured: causal + padding mask, masked tokens zeroed "
                    "before the short convolutions (mlx-embeddings: causal only, no mask)"
                ],
            },
        )
        if self.cpu_kernels.startswith("on"):
            warm_up(self, [TextInput("warm up"), TextInput("warm up", prompt_name="document")])

    # ---- any thread ---------------------------------------------------------------------------
    def _role(self, item: TextInput | TokenInput) -> str:
        name = item.prompt_name or "query"
        if name not in self.lengths:
            raise InvalidRequest(
                f"model {self.info.name!r} has no prompt {name!r} (its prompts: 'document', "
                "'query')",
                param="prompt_name",
            )
        return name

    def prepare(self, item: EngineInput, *, truncate: bool = False) -> Prepared:
        if isinstance(item, ImageInput):
            raise UnsupportedInput(f"{self.info.name} is a text model: images are not supported")
        before, after = self.specials
        if isinstance(item, TextInput):
            role = self._role(item)
            text = item.text.strip()  # sentence-transformers' Transformer.tokenize
            if self.lower_case:
                text = text.lower()
            body = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        elif isinstance(item, TokenInput):
            role = self._role(item)
            bad = [i for i in item.ids if not 0 <= i < self.vocab_size]
            if bad:
                raise InvalidTokenIds(out_of_vocab_message(self.vocab_size, bad))
            body = list(item.ids)
            if before and body[: len(before)] == before:
                body = body[len(before) :]
            if after and len(body) >= len(after) and body[-len(after) :] == after:
                body = body[: -len(after)]
        else:
            raise UnsupportedInput(f"unsupported input type {type(item).__name__}")
        prefix_id = self.prefix_ids[role]
        limit = self.lengths[role] - (prefix_id is not None)
        room = limit - len(before) - len(after)
        if len(body) > room:
            if not truncate:
                raise InputTooLong(
                    f"this input is {len(body) + len(before) + len(after) + 1} tokens long; the "
                    f"{role} limit for this model is {self.lengths[role]} tokens. Shorten it or "
                    'send "truncate": true.'
                )
            body = body[: max(room, 0)]
        ids = before + body + after
        attention = [1.0] * len(ids)
        expand = role == "query" and self.settings["do_query_expansion"]
        if expand:
            n_pad = limit - len(ids)
            ids += [self.pad_id] * n_pad
            attention += [0.0] * n_pad
        if prefix_id is not None:
            ids = ids[:1] + [prefix_id] + ids[1:]
            attention = attention[:1] + [1.0] + attention[1:]
        ids_arr = np.asarray(ids, dtype=np.int32)
        att = np.asarray(attention, dtype=np.float32)
        if expand and self.settings["attend_to_expansion_tokens"]:
            att[:] = 1.0
        if role == "query":
            keep = np.ones(len(ids), dtype=bool) if expand else att > 0
        else:
            keep = (att > 0) & ~np.isin(ids_arr, list(self.skiplist))
        payload = ColbertPayload(input_ids=ids_arr, attention=att, keep=keep)
        return Prepared(n_tokens=len(ids), payload=payload, kind="text")

    # ---- MLX thread only ------------------------------------------------------------------------
    def forward(self, batch: list[Prepared]) -> list[Embedding]:
        payloads: list[ColbertPayload] = [p.payload for p in batch]
        lengths = [len(p.input_ids) for p in payloads]
        ids = right_padded([p.input_ids for p in payloads], self.pad_id)
        att = np.zeros(ids.shape, dtype=np.float32)
        for b, p in enumerate(payloads):
            att[b, : lengths[b]] = p.attention
        hidden = self.hidden_states(self.model, ids, att)
        out = l2_normalized(self.model.dense[0](hidden))
        return [
            Embedding(
                vectors=np.ascontiguousarray(out[b, : lengths[b]][p.keep], dtype=np.float32),
                n_tokens=lengths[b],
            )
            for b, p in enumerate(payloads)
        ]
