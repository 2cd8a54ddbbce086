"""The ColQwen2.5 adapter on the tiny random model, through the real loading code and runner."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from app.engine import Engine
from app.engine.base import ImageInput, TextInput, TokenInput
from app.errors import InputTooLong, InvalidTokenIds


def _image(h: int, w: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((h, w, 3)) * 255).astype("uint8"))


def _embed(engine: Engine, items):
    return engine.embed_blocking([engine.prepare(i) for i in items])


def test_info(colqwen_engine: Engine) -> None:
    info = colqwen_engine.info
    assert info.kind == "multi_vector"
    assert info.dim == 128
    assert info.modalities == ("text", "image")
    assert info.dtype == "float32"
    assert info.extra["max_pixels"] == 64 * 28 * 28


def test_query_prompt_matches_colpali(colqwen_engine: Engine) -> None:
    proc = colqwen_engine.adapter.processor
    text = "What is the revenue in 2023?"
    prepared = colqwen_engine.prepare(TextInput(text))
    expected = proc.tokenizer(text + "<|endoftext|>" * 10, add_special_tokens=False)["input_ids"]
    assert list(prepared.payload.input_ids) == list(expected)
    eot = proc.tokenizer.convert_tokens_to_ids("<|endoftext|>")
    assert list(prepared.payload.input_ids[-10:]) == [eot] * 10
    assert prepared.n_tokens == len(expected)


def test_image_prompt_expands_image_tokens(colqwen_engine: Engine) -> None:
    proc = colqwen_engine.adapter.processor
    prepared = colqwen_engine.prepare(ImageInput(_image(100, 150)))
    ids = list(prepared.payload.input_ids)
    tok = proc.tokenizer
    start, end = prepared.payload.image_span
    t, h, w = prepared.payload.grid_thw
    # smart_resize(100, 150) with factor 28 -> 112 x 140 -> 8 x 10 patches -> 4 x 5 tokens
    assert (t, h, w) == (1, 8, 10)
    assert end - start == 20
    assert (
        ids[:start]
        == tok("<|im_start|>user\n<|vision_start|>", add_special_tokens=False)["input_ids"]
    )
    assert set(ids[start:end]) == {proc.image_token_id}
    assert (
        ids[end:]
        == tok(
            "<|vision_end|>Describe the image.<|im_end|><|endoftext|>", add_special_tokens=False
        )["input_ids"]
    )
    assert prepared.payload.pixel_values.shape == (80, 3 * 2 * 14 * 14)


def test_shapes_norms_and_no_padding_rows(colqwen_engine: Engine) -> None:
    items = [
        TextInput("a short query"),
        TextInput("a much longer query " * 8),
        ImageInput(_image(300, 120)),
    ]
    out = _embed(colqwen_engine, items)
    for item, emb in zip(items, out, strict=True):
        assert emb.vectors.dtype == np.float32
        assert emb.vectors.ndim == 2 and emb.vectors.shape[1] == 128
        assert emb.vectors.shape[0] == emb.n_tokens == colqwen_engine.prepare(item).n_tokens
        np.testing.assert_allclose(np.linalg.norm(emb.vectors, axis=1), 1.0, atol=1e-5)
        # no padding row: every row is a real, distinct token vector
        assert np.all(np.abs(emb.vectors).sum(axis=1) > 0)
    assert out[2].extras == {
        "image_grid": [11, 4],
        "image_token_span": [6, 50],
        "image_size": [4 * 28, 11 * 28],  # as embedded (after smart_resize), [width, height]
    }


def test_query_and_image_prompts_differ(colqwen_engine: Engine) -> None:
    text, image = _embed(
        colqwen_engine, [TextInput("Describe the image."), ImageInput(_image(56, 56))]
    )
    assert text.n_tokens != image.n_tokens
    assert "image_grid" in image.extras and not text.extras


def test_mixed_batch_equals_one_by_one(colqwen_engine: Engine) -> None:
    items = [
        TextInput("q"),
        ImageInput(_image(100, 150, 1)),
        TextInput("a longer query about the quarterly revenue table"),
        ImageInput(_image(500, 700, 2)),
        ImageInput(_image(56, 56, 3)),
        TokenInput((5, 6, 7, 8)),
    ]
    batched = _embed(colqwen_engine, items)
    for item, emb in zip(items, batched, strict=True):
        alone = _embed(colqwen_engine, [item])[0]
        assert alone.vectors.shape == emb.vectors.shape
        np.testing.assert_allclose(emb.vectors, alone.vectors, atol=1e-5)


def test_text_matches_upstream_forward_where_upstream_is_right(colqwen_engine: Engine) -> None:
    """A lone text query has 1-D positions and no padding: mlx-embeddings' own forward is right
    there, so ours must agree with it."""
    import mlx.core as mx

    prepared = colqwen_engine.prepare(TextInput("quarterly revenue"))
    ours = colqwen_engine.embed_blocking([prepared])[0].vectors

    def upstream(adapter):
        ids = mx.array(prepared.payload.input_ids[None, :])
        return np.array(adapter.model(ids).text_embeds[0])

    np.testing.assert_allclose(ours, colqwen_engine.call(upstream), atol=1e-5)


def test_image_positions_differ_from_upstream_1d(colqwen_engine: Engine) -> None:
    """Upstream feeds image tokens 1-D positions; ours are M-RoPE 3-D, so the vectors differ."""
    import mlx.core as mx

    prepared = colqwen_engine.prepare(ImageInput(_image(100, 150)))
    ours = colqwen_engine.embed_blocking([prepared])[0].vectors

    def upstream(adapter):
        p = prepared.payload
        out = adapter.model(
            mx.array(p.input_ids[None, :]),
            pixel_values=mx.array(p.pixel_values),
            image_grid_thw=mx.array(np.array([p.grid_thw])),
        )
        return np.array(out.image_embeds[0])

    cos = (ours * colqwen_engine.call(upstream)).sum(axis=1)
    assert cos.min() < 0.99, "tiny model too weak to show the M-RoPE position bug"


def test_too_long_query_is_rejected_or_truncated(tiny_colqwen_path) -> None:
    from app.engine import load_engine
    from app.settings import Settings

    engine = load_engine(Settings(model=str(tiny_colqwen_path), max_tokens_per_input=20))
    engine.wait_ready(60)
    try:
        with pytest.raises(InputTooLong, match="limit is 20 tokens"):
            engine.prepare(TextInput("word " * 50))
        prepared = engine.prepare(TextInput("word " * 50), truncate=True)
        assert prepared.n_tokens == 20
        eot = engine.adapter.processor.tokenizer.convert_tokens_to_ids("<|endoftext|>")
        assert list(prepared.payload.input_ids[-10:]) == [eot] * 10
    finally:
        engine.close()


def test_invalid_token_ids(colqwen_engine: Engine) -> None:
    with pytest.raises(InvalidTokenIds):
        colqwen_engine.prepare(TokenInput((1, 10**9)))
    image_pad = colqwen_engine.adapter.processor.image_token_id
    with pytest.raises(InvalidTokenIds):
        colqwen_engine.prepare(TokenInput((1, image_pad)))


@pytest.mark.parametrize("h,w", [(100, 150), (28, 28), (10, 900), (1100, 850), (3000, 2000)])
def test_measure_counts_image_tokens_without_preprocessing(colqwen_engine: Engine, h, w) -> None:
    item = ImageInput(_image(h, w))
    measured = colqwen_engine.measure(item)
    assert measured.payload is None and measured.kind == "image"
    assert measured.pixels == h * w
    assert measured.n_tokens == colqwen_engine.prepare(item).n_tokens
