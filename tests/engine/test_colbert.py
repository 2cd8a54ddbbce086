"""LFM2-ColBERT (multi-vector text, pylate's layout) equals pylate's ColBERT.encode on the tiny
model, per the committed goldens (tests/goldens/colbert_reference.*, from
``scripts/make_goldens.py --only colbert``): 6 texts as queries and as documents, each alone,
all in one batch and queries mixed with documents, for the model's own settings (query
expansion, expansion tokens masked) and two variants of them (no expansion; attended
expansion tokens)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from golden_checks import COSINE_MIN, assert_matches, cosines
from script_modules import load_script

from app.engine import Engine, load_engine
from app.engine.base import TextInput, TokenInput
from app.errors import InputTooLong, InvalidRequest, UnsupportedInput
from app.settings import Settings

GOLDENS = Path(__file__).resolve().parents[1] / "goldens"
INDEX = json.loads((GOLDENS / "colbert_reference.json").read_text())
REF = np.load(GOLDENS / "colbert_reference.npz")
TEXTS: list[str] = INDEX["texts"]
VARIANTS = sorted(INDEX["variants"])
ROLES = ("query", "document")


def reference(variant: str, role: str) -> list[np.ndarray]:
    return [REF[f"{variant}.{role}.{i}"] for i in range(len(TEXTS))]


def variant_dir(src: Path, dst: Path, overrides: dict[str, bool]) -> Path:
    if not overrides:
        return src
    shutil.copytree(src, dst)
    f = dst / "config_sentence_transformers.json"
    f.write_text(json.dumps({**json.loads(f.read_text()), **overrides}))
    return dst


@pytest.fixture(scope="module")
def engines(
    tiny_models_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Engine]]:
    src = tiny_models_dir / INDEX["model_dir"]
    tmp = tmp_path_factory.mktemp("colbert")
    out = {
        v: load_engine(
            Settings(model=str(variant_dir(src, tmp / v, INDEX["variants"][v]["overrides"])))
        )
        for v in VARIANTS
    }
    for engine in out.values():
        engine.wait_ready(120)
    yield out
    for engine in out.values():
        engine.close()


def test_tiny_model_is_the_one_the_goldens_were_made_from(tiny_models_dir: Path) -> None:
    digest = load_script("make_goldens").model_dir_digest(tiny_models_dir / INDEX["model_dir"])
    assert digest == INDEX["model_digest"], "make_tiny_models.py changed: rerun make_goldens.py"


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("variant", VARIANTS)
def test_colbert_matches_pylate(engines, variant: str, role: str) -> None:
    engine = engines[variant]
    expected = INDEX["variants"][variant]["roles"][role]
    prepared = [engine.prepare(TextInput(t, prompt_name=role), truncate=True) for t in TEXTS]
    assert [p.payload.input_ids.tolist() for p in prepared] == expected["input_ids"]
    refs = reference(variant, role)
    for i, p in enumerate(prepared):
        assert_matches(engine.embed_blocking([p])[0].vectors, refs[i], f"{variant}/{role}/{i}")
    for i, e in enumerate(engine.embed_blocking(prepared)):
        assert_matches(e.vectors, refs[i], f"{variant}/{role}/{i} batched")


def test_queries_and_documents_in_one_batch(engines) -> None:
    engine = engines["expansion"]
    items = [TextInput(t, prompt_name=r) for t in TEXTS for r in ROLES]
    out = engine.embed_blocking([engine.prepare(it, truncate=True) for it in items])
    for k, (it, e) in enumerate(zip(items, out, strict=True)):
        ref = reference("expansion", it.prompt_name)[k // 2]
        assert_matches(e.vectors, ref, f"mixed {k}")


def test_default_is_query_and_token_ids_equal_text(engines) -> None:
    engine = engines["expansion"]
    info = engine.info
    assert info.kind == "multi_vector" and info.modalities == ("text",) and info.dim == 32
    assert info.extra["default_prompt_name"] == "query"
    assert info.extra["prompts"] == {"query": "[Q] ", "document": "[D] "}
    text = TEXTS[1]
    default = engine.prepare(TextInput(text))
    assert (
        default.payload.input_ids.tolist()
        == INDEX["variants"]["expansion"]["roles"]["query"]["input_ids"][1]
    )
    for role in ROLES:
        plain = engine.prepare(TextInput(text, prompt_name=role))
        ids = engine.adapter.tokenizer(text)["input_ids"]  # with <|startoftext|>
        tokens = engine.prepare(TokenInput(tuple(ids), prompt_name=role))
        assert tokens.payload.input_ids.tolist() == plain.payload.input_ids.tolist()


def test_long_input_needs_truncate_and_bad_input_is_refused(engines) -> None:
    engine = engines["expansion"]
    for role in ROLES:
        with pytest.raises(InputTooLong):
            engine.prepare(TextInput(TEXTS[-1], prompt_name=role))
    with pytest.raises(InvalidRequest):
        engine.prepare(TextInput("x", prompt_name="search"))
    from PIL import Image

    from app.engine.base import ImageInput

    with pytest.raises(UnsupportedInput):
        engine.prepare(ImageInput(Image.new("RGB", (8, 8))))


def test_stock_mlx_embeddings_forward_differs_on_expansion_tokens(engines) -> None:
    """The fix is needed: mlx-embeddings' own Model ignores the attention mask, so a query's
    masked expansion tokens come out different from pylate's (real tokens agree: causal)."""
    adapter = engines["expansion"].adapter
    p = adapter.prepare(TextInput(TEXTS[1]))
    stock = adapter.model(mx.array(p.payload.input_ids[None]))
    vecs = np.array(stock.text_embeds.astype(mx.float32))[0]
    ref = reference("expansion", "query")[1]
    cos = cosines(vecs, ref)
    real = p.payload.attention > 0
    assert cos[real].min() >= COSINE_MIN
    assert cos[~real].min() < 0.99
