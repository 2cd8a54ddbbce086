"""Qwen3-VL-Embedding equals the model card's embedder on the tiny model, per the committed
goldens (tests/goldens/qwen3_vl_reference.*, from scripts/make_goldens.py's
Qwen3VLEmbedderReference on transformers' Qwen3VLModel): 6 texts with the default instruction
(documents) and with the query instruction, and the 6 committed PNGs (deepstack features,
M-RoPE image positions); each alone, per kind in one batch, and all mixed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from golden_checks import assert_matches, golden_engine, golden_inputs

from app.engine import Engine, load_adapter, load_engine
from app.engine.base import ImageInput, TextInput, TokenInput
from app.errors import InputTooLong, InvalidRequest, UnsupportedInput
from app.settings import Settings

GOLDENS = Path(__file__).resolve().parents[1] / "goldens"
INDEX = json.loads((GOLDENS / "qwen3_vl_reference.json").read_text())
REF = np.load(GOLDENS / "qwen3_vl_reference.npz")
MODES = ("document", "query", "image")


def items(mode: str) -> list[TextInput | ImageInput]:
    return golden_inputs(INDEX, mode)


@pytest.fixture(scope="module")
def engine(tiny_models_dir: Path) -> Iterator[Engine]:
    yield from golden_engine(tiny_models_dir, INDEX)


@pytest.mark.parametrize("mode", MODES)
def test_matches_the_model_card_embedder(engine: Engine, mode: str) -> None:
    expected = INDEX["modes"][mode]
    prepared = [engine.prepare(it) for it in items(mode)]
    assert [p.payload.input_ids.tolist() for p in prepared] == expected["input_ids"]
    if mode == "image":
        assert [list(p.payload.grid_thw) for p in prepared] == expected["image_grid_thw"]
        for i, p in enumerate(prepared):
            np.testing.assert_allclose(
                p.payload.pixel_values, REF[f"image.{i}.pixel_values"], atol=1e-6
            )
    ref = REF[f"{mode}.embeddings"]
    alone = np.stack([engine.embed_blocking([p])[0].vectors for p in prepared])
    assert_matches(alone, ref, f"{mode} alone")
    batched = np.stack([e.vectors for e in engine.embed_blocking(prepared)])
    assert_matches(batched, ref, f"{mode} batched")


def test_texts_and_images_in_one_batch(engine: Engine) -> None:
    order = [(m, i, it) for m in MODES for i, it in enumerate(items(m))]
    order = order[1::2] + order[::2]
    out = engine.embed_blocking([engine.prepare(it) for _, _, it in order])
    for (mode, i, _), e in zip(order, out, strict=True):
        assert_matches(e.vectors[None], REF[f"{mode}.embeddings"][i][None], f"mixed {mode} {i}")


def test_no_prompt_is_the_default_instruction_and_bad_inputs_are_refused(engine: Engine) -> None:
    info = engine.info
    assert info.kind == "pooled" and info.modalities == ("text", "image") and info.dim == 64
    assert info.extra["prompts"]["document"] == INDEX["instructions"]["default"]
    assert info.extra["prompts"]["query"] == INDEX["instructions"]["query"]
    text = INDEX["texts"][2]
    plain = engine.prepare(TextInput(text)).payload.input_ids.tolist()
    assert plain == INDEX["modes"]["document"]["input_ids"][2]
    with pytest.raises(InvalidRequest):
        engine.prepare(TextInput(text, prompt_name="search"))
    with pytest.raises(UnsupportedInput):
        engine.prepare(TokenInput((1, 2, 3)))


def test_long_text_needs_truncate(tiny_models_dir: Path) -> None:
    e = load_engine(
        Settings(model=str(tiny_models_dir / INDEX["model_dir"]), max_tokens_per_input=60)
    )
    e.wait_ready(120)
    try:
        with pytest.raises(InputTooLong):
            e.prepare(TextInput(INDEX["texts"][5]))
        cut = e.prepare(TextInput(INDEX["texts"][5]), truncate=True)
        assert cut.payload.input_ids.tolist() == INDEX["modes"]["document"]["input_ids"][5][:60]
    finally:
        e.close()


def test_stock_mlx_embeddings_reuses_the_previous_calls_positions(tiny_models_dir: Path) -> None:
    """Why the forward is ours: mlx-embeddings' Model keeps the last call's M-RoPE positions on
    the language model; the next, not longer, text call indexes them wrongly and raises."""
    adapter = load_adapter(Settings(model=str(tiny_models_dir / INDEX["model_dir"])))
    model = adapter.model
    model.args.yes_token_id, model.args.no_token_id = 0, 1  # its reranker logits: tiny vocab
    p = adapter.prepare(TextInput(INDEX["texts"][1]))
    ids = mx.array(p.payload.input_ids[None])
    mask = mx.ones(ids.shape, dtype=mx.int32)
    model.language_model._position_ids = None
    first = np.array(model(ids, attention_mask=mask).text_embeds)[0]
    assert_matches(first[None], REF["document.embeddings"][1][None], "stock, first call")
    with pytest.raises(ValueError):
        model(ids, attention_mask=mask)
