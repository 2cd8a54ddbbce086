"""SigLIP text and image vectors equal transformers' SiglipModel on the tiny SigLIP, per
tests/goldens/siglip_reference.* (text padded to max_length without an attention mask, as
SigLIP was trained; images through the PIL SiglipImageProcessor), alone and in mixed batches."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from PIL import Image
from script_modules import load_script

from app.engine import Engine, load_engine
from app.engine.base import ImageInput, TextInput, TokenInput
from app.errors import InputTooLong
from app.settings import Settings

GOLDENS = Path(__file__).resolve().parents[1] / "goldens"
INDEX = json.loads((GOLDENS / "siglip_reference.json").read_text())
REF = np.load(GOLDENS / "siglip_reference.npz")


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


@pytest.fixture(scope="module")
def engine(tiny_models_dir: Path) -> Iterator[Engine]:
    e = load_engine(Settings(model=str(tiny_models_dir / INDEX["model_dir"])))
    e.wait_ready(120)
    yield e
    e.close()


def _texts(engine: Engine):
    return [engine.prepare(TextInput(t), truncate=True) for t in INDEX["texts"]]


def _images(engine: Engine):
    return [
        engine.prepare(ImageInput(Image.open(GOLDENS / "images" / f"{n}.png")))
        for n in INDEX["images"]
    ]


def test_tiny_siglip_is_the_goldens_model(tiny_models_dir: Path) -> None:
    digest = load_script("make_goldens").model_dir_digest(tiny_models_dir / INDEX["model_dir"])
    assert digest == INDEX["model_digest"]


def test_info(engine: Engine) -> None:
    info = engine.info
    assert (info.kind, info.modalities, info.extra["family"]) == (
        "pooled",
        ("text", "image"),
        "siglip",
    )
    assert info.dim == REF["text.embeddings"].shape[1] == REF["image.embeddings"].shape[1]


def test_text_ids_and_vectors_alone_and_batched(engine: Engine) -> None:
    prepared = _texts(engine)
    assert [p.payload.tolist() for p in prepared] == INDEX["text_input_ids"]
    ref = REF["text.embeddings"]
    alone = np.stack([engine.embed_blocking([p])[0].vectors for p in prepared])
    batched = np.stack([e.vectors for e in engine.embed_blocking(prepared)])
    assert cosines(alone, ref).min() >= 0.9999 and cosines(batched, ref).min() >= 0.9999
    np.testing.assert_allclose(np.linalg.norm(alone, axis=1), 1.0, atol=1e-5)


def test_image_pixels_and_vectors_alone_and_mixed_with_text(engine: Engine) -> None:
    images = _images(engine)
    pixels = np.stack([p.payload.transpose(2, 0, 1) for p in images])
    np.testing.assert_allclose(pixels, REF["image.pixel_values"], atol=1e-6)
    ref = REF["image.embeddings"]
    alone = np.stack([engine.embed_blocking([p])[0].vectors for p in images])
    texts = _texts(engine)
    mixed = [x for pair in zip(images, texts, strict=True) for x in pair]
    out = engine.embed_blocking(mixed)
    assert cosines(alone, ref).min() >= 0.9999
    assert cosines(np.stack([o.vectors for o in out[0::2]]), ref).min() >= 0.9999
    assert cosines(np.stack([o.vectors for o in out[1::2]]), REF["text.embeddings"]).min() >= 0.9999


def test_masked_text_would_differ(engine: Engine) -> None:
    """Why no mask: the short text with an attention mask moves off SigLIP's vector."""
    assert min(INDEX["text_masked_vs_unmasked_cosine"]) < 0.99
    p = _texts(engine)[0]
    ids = p.payload[None]
    additive = np.full(ids.shape, -np.inf, dtype=np.float32)
    additive[:, : p.n_tokens] = 0.0  # attend to the real tokens (and the first </s>) only
    masked = engine.call(
        lambda a: np.array(
            a.model.get_text_features(mx.array(ids), attention_mask=mx.array(additive))
        )
    )
    assert cosines(masked[0], REF["text.embeddings"][0]) < 0.999


def test_usage_counts_real_tokens_and_limits(engine: Engine) -> None:
    first = _texts(engine)[0]
    assert first.n_tokens == sum(1 for i in INDEX["text_input_ids"][0] if i != 1) + 1
    with pytest.raises(InputTooLong):
        engine.prepare(TextInput(INDEX["texts"][-1]))
    ids = tuple(INDEX["text_input_ids"][0][: first.n_tokens - 1])
    assert engine.prepare(TokenInput(ids)).payload.tolist() == INDEX["text_input_ids"][0]
