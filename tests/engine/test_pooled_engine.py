"""Pooled BERT-family models: the real all-MiniLM-L6-v2 and the tiny BERT."""

from __future__ import annotations

import numpy as np
import pytest

from app.engine import Engine
from app.engine.base import ImageInput, TextInput, TokenInput
from app.errors import InputTooLong, UnsupportedInput


def _embed(engine: Engine, items):
    return engine.embed_blocking([engine.prepare(i) for i in items])


def test_minilm_info(minilm_engine: Engine) -> None:
    info = minilm_engine.info
    assert (info.kind, info.dim, info.modalities) == ("pooled", 384, ("text",))
    assert info.max_tokens == 256  # sentence_bert_config.json max_seq_length
    assert info.extra["pooling"] == "mean" and info.extra["normalized"] is True


def test_minilm_known_vector(minilm_engine: Engine) -> None:
    """First values of sentence-transformers' all-MiniLM-L6-v2 for "hello world"."""
    (emb,) = _embed(minilm_engine, [TextInput("hello world")])
    assert emb.vectors.shape == (384,) and emb.n_tokens == 4
    np.testing.assert_allclose(
        emb.vectors[:4], [-0.03447727, 0.03102325, 0.00673497, 0.02610894], atol=1e-5
    )


def test_minilm_semantics_and_batch_invariance(minilm_engine: Engine) -> None:
    texts = [
        "A man is eating food.",
        "A man is eating a piece of bread.",
        "The new movie is awesome for kids and adults " * 5,
        "x",
    ]
    out = _embed(minilm_engine, [TextInput(t) for t in texts])
    v = np.stack([o.vectors for o in out])
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert v[0] @ v[1] > 0.6 > v[0] @ v[2]
    for t, o in zip(texts, out, strict=True):
        np.testing.assert_allclose(
            _embed(minilm_engine, [TextInput(t)])[0].vectors, o.vectors, atol=1e-5
        )


def test_minilm_token_ids_equal_text(minilm_engine: Engine) -> None:
    tok = minilm_engine.adapter.tokenizer
    ids = tok("hello world", add_special_tokens=False)["input_ids"]
    a, b = _embed(minilm_engine, [TextInput("hello world"), TokenInput(tuple(ids))])
    np.testing.assert_allclose(a.vectors, b.vectors, atol=1e-6)


def test_minilm_limits(minilm_engine: Engine) -> None:
    with pytest.raises(InputTooLong, match="256"):
        minilm_engine.prepare(TextInput("word " * 400))
    prepared = minilm_engine.prepare(TextInput("word " * 400), truncate=True)
    assert prepared.n_tokens == 256
    with pytest.raises(UnsupportedInput):
        from PIL import Image

        minilm_engine.prepare(ImageInput(Image.new("RGB", (8, 8))))


def test_tiny_bert_loads_and_pools(tiny_bert_engine: Engine) -> None:
    out = _embed(tiny_bert_engine, [TextInput("hello there"), TextInput("a b c d e f")])
    assert out[0].vectors.shape == (tiny_bert_engine.info.dim,)
    assert not np.allclose(out[0].vectors, out[1].vectors)
    np.testing.assert_allclose(np.linalg.norm(out[0].vectors), 1.0, atol=1e-5)
