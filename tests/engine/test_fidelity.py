"""Our vectors equal colpali-engine 0.3.18 and sentence-transformers, per the committed goldens
(tests/goldens/README.md says how they were made)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.engine import Engine, load_engine
from app.engine.base import ImageInput, TextInput
from app.settings import Settings

GOLDENS = Path(__file__).resolve().parents[1] / "goldens"
INDEX = json.loads((GOLDENS / "colqwen_reference.json").read_text())
REF = np.load(GOLDENS / "colqwen_reference.npz")
ITEMS = INDEX["items"]
MINILM = np.load(GOLDENS / "minilm_reference.npz")

COSINE_MIN = 0.9999
ABS_MAX = 1e-4


def item_input(item: dict):
    if item["kind"] == "query":
        return TextInput(item["text"])
    return ImageInput(Image.open(GOLDENS / item["image"]))


def assert_matches(vectors: np.ndarray, name: str) -> None:
    ref = REF[f"{name}.embeddings"]
    assert vectors.shape == ref.shape, name
    cos = (vectors * ref).sum(axis=1) / (
        np.linalg.norm(vectors, axis=1) * np.linalg.norm(ref, axis=1)
    )
    assert cos.min() >= COSINE_MIN, f"{name}: min per-token cosine {cos.min():.6f}"
    assert np.abs(vectors - ref).max() <= ABS_MAX, f"{name}: max abs diff"


@pytest.fixture(scope="module")
def golden_engine() -> Iterator[Engine]:
    engine = load_engine(Settings(model=str(GOLDENS / "tiny-colqwen2.5")))
    engine.wait_ready(120)
    yield engine
    engine.close()


def _embed(engine: Engine, items: list[dict]):
    return engine.embed_blocking([engine.prepare(item_input(i)) for i in items])


@pytest.mark.parametrize("item", ITEMS, ids=[i["name"] for i in ITEMS])
def test_inputs_tokenised_and_preprocessed_like_colpali(golden_engine: Engine, item) -> None:
    payload = golden_engine.prepare(item_input(item)).payload
    np.testing.assert_array_equal(payload.input_ids, REF[f"{item['name']}.input_ids"])
    if item["kind"] == "image":
        np.testing.assert_array_equal(payload.grid_thw, REF[f"{item['name']}.image_grid_thw"])
        np.testing.assert_allclose(
            payload.pixel_values, REF[f"{item['name']}.pixel_values"], atol=1e-6
        )


@pytest.mark.parametrize("item", ITEMS, ids=[i["name"] for i in ITEMS])
def test_each_item_alone_matches_reference(golden_engine: Engine, item) -> None:
    (emb,) = _embed(golden_engine, [item])
    assert_matches(emb.vectors, item["name"])


def test_one_mixed_batch_matches_reference(golden_engine: Engine) -> None:
    # interleave queries and images of different sizes in one padded batch
    queries = [i for i in ITEMS if i["kind"] == "query"]
    images = [i for i in ITEMS if i["kind"] == "image"]
    mixed = [x for pair in zip(images, queries, strict=False) for x in pair]
    out = _embed(golden_engine, mixed)
    for item, emb in zip(mixed, out, strict=True):
        assert_matches(emb.vectors, item["name"])


def test_maxsim_scores_match_reference(golden_engine: Engine) -> None:
    by_name = {i["name"]: i for i in ITEMS}
    rows = [by_name[n] for n in INDEX["score_rows"]]
    cols = [by_name[n] for n in INDEX["score_cols"]]
    q = [e.vectors for e in _embed(golden_engine, rows)]
    d = [e.vectors for e in _embed(golden_engine, cols)]
    scores = np.array([[(qi @ di.T).max(axis=1).sum() for di in d] for qi in q])
    np.testing.assert_allclose(scores, REF["scores"], atol=1e-3)


@pytest.mark.parametrize("target", [ITEMS[1]["name"], "tall_text", "large_scene"])
def test_batch_invariance_across_sizes_and_companions(golden_engine: Engine, target) -> None:
    by_name = {i["name"]: i for i in ITEMS}
    others = [i for i in ITEMS if i["name"] != target]
    alone = _embed(golden_engine, [by_name[target]])[0].vectors
    rng = np.random.default_rng(0)
    for size in (2, 7):
        for trial in range(2):
            picks = list(rng.choice(len(others), size=size - 1, replace=size - 1 > len(others)))
            batch = [others[k] for k in picks]
            batch.insert(int(rng.integers(0, size)), by_name[target])
            out = _embed(golden_engine, batch)
            got = out[batch.index(by_name[target])].vectors
            assert np.abs(got - alone).max() <= 1e-5, (size, trial)


def test_minilm_matches_sentence_transformers(minilm_engine: Engine) -> None:
    sentences = [str(s) for s in MINILM["sentences"]]
    prepared = [minilm_engine.prepare(TextInput(s), truncate=True) for s in sentences]
    assert [p.n_tokens for p in prepared] == [int(n) for n in MINILM["num_tokens"]]
    out = minilm_engine.embed_blocking(prepared)
    ours = np.stack([o.vectors for o in out])
    ref = MINILM["embeddings"]
    cos = (ours * ref).sum(axis=1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(ref, axis=1))
    assert cos.min() >= COSINE_MIN
    assert np.abs(ours - ref).max() <= ABS_MAX


# Measured with scripts/measure_precision.py (README "Fidelity"): weights cast to bf16/fp16.
PRECISION_FLOORS = {
    # dtype: (ColQwen min per-token cosine, ColQwen mean, MiniLM min cosine)
    "bfloat16": (0.92, 0.998, 0.9999),
    "float16": (0.999, 0.99995, 0.99999),
}


@pytest.mark.slow
@pytest.mark.parametrize("dtype", sorted(PRECISION_FLOORS))
def test_reduced_precision_stays_within_measured_tolerance(dtype: str, minilm_path) -> None:
    col_min, col_mean, mini_min = PRECISION_FLOORS[dtype]
    engine = load_engine(Settings(model=str(GOLDENS / "tiny-colqwen2.5"), dtype=dtype))
    engine.wait_ready(120)
    try:
        assert engine.info.dtype == dtype
        out = _embed(engine, ITEMS)
    finally:
        engine.close()
    cos = np.concatenate(
        [
            (o.vectors * REF[f"{i['name']}.embeddings"]).sum(axis=1)
            / np.linalg.norm(o.vectors, axis=1)
            for i, o in zip(ITEMS, out, strict=True)
        ]
    )
    assert cos.min() >= col_min and cos.mean() >= col_mean, (cos.min(), cos.mean())
    assert cos.min() < 1.0 - 1e-7, "reduced precision had no effect: was the cast applied?"

    engine = load_engine(Settings(model=str(minilm_path), dtype=dtype))
    engine.wait_ready(120)
    try:
        sentences = [str(s) for s in MINILM["sentences"][:12]]
        got = engine.embed_blocking(
            [engine.prepare(TextInput(s), truncate=True) for s in sentences]
        )
    finally:
        engine.close()
    ours = np.stack([g.vectors for g in got])
    assert ((ours * MINILM["embeddings"][:12]).sum(axis=1)).min() >= mini_min
