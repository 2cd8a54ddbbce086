"""Each pooled text family equals sentence-transformers on its tiny model, per the committed
goldens (tests/goldens/text_families_reference.*, made by scripts/make_goldens.py from the
models scripts/make_tiny_models.py builds; the tests rebuild those models and check their digest
first). Every text alone and all in one padded batch, with no prompt and with each prompt."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from script_modules import load_script

from app.engine import Engine, load_engine
from app.engine.base import TextInput, TokenInput
from app.errors import InvalidRequest
from app.settings import Settings

GOLDENS = Path(__file__).resolve().parents[1] / "goldens"
INDEX = json.loads((GOLDENS / "text_families_reference.json").read_text())
REF = np.load(GOLDENS / "text_families_reference.npz")
TEXTS: list[str] = INDEX["texts"]
FAMILIES = sorted(INDEX["families"])
CASES = [(f, m) for f in FAMILIES for m in INDEX["families"][f]["modes"]]

COSINE_MIN = 0.9999
ABS_MAX = 1e-4


def cosines(ours: np.ndarray, ref: np.ndarray) -> np.ndarray:
    return (ours * ref).sum(-1) / (np.linalg.norm(ours, axis=-1) * np.linalg.norm(ref, axis=-1))


def assert_matches(ours: np.ndarray, ref: np.ndarray, what: str) -> None:
    assert ours.shape == ref.shape, what
    assert np.isfinite(ours).all(), f"{what}: not finite"
    cos = cosines(ours, ref)
    assert cos.min() >= COSINE_MIN, f"{what}: min cosine {cos.min():.6f}"
    assert np.abs(ours - ref).max() <= ABS_MAX, f"{what}: max abs diff {np.abs(ours - ref).max()}"


@pytest.fixture(scope="module")
def engines(tiny_models_dir: Path) -> Iterator[dict[str, Engine]]:
    out: dict[str, Engine] = {}
    for family in FAMILIES:
        path = tiny_models_dir / INDEX["families"][family]["model_dir"]
        out[family] = load_engine(Settings(model=str(path)))
    for engine in out.values():
        engine.wait_ready(120)
    yield out
    for engine in out.values():
        engine.close()


def _prompt(mode: str) -> str | None:
    return None if mode == "none" else mode


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_model_is_the_one_the_goldens_were_made_from(tiny_models_dir: Path, family) -> None:
    entry = INDEX["families"][family]
    digest = load_script("make_goldens").model_dir_digest(tiny_models_dir / entry["model_dir"])
    assert digest == entry["model_digest"], "make_tiny_models.py changed: rerun make_goldens.py"


@pytest.mark.parametrize(("family", "mode"), CASES, ids=[f"{f}-{m}" for f, m in CASES])
def test_family_matches_sentence_transformers(engines, family, mode) -> None:
    engine = engines[family]
    expected = INDEX["families"][family]["modes"][mode]
    prepared = [engine.prepare(TextInput(t, prompt_name=_prompt(mode))) for t in TEXTS]
    assert [p.payload.tolist() for p in prepared] == expected["input_ids"]
    assert [p.n_tokens for p in prepared] == [len(x) for x in expected["input_ids"]]
    ref = REF[f"{family}.{mode}.embeddings"]
    alone = np.stack([engine.embed_blocking([p])[0].vectors for p in prepared])
    assert_matches(alone, ref, f"{family}/{mode} alone")
    batched = np.stack([e.vectors for e in engine.embed_blocking(prepared)])
    assert_matches(batched, ref, f"{family}/{mode} batched")


@pytest.mark.parametrize("family", FAMILIES)
def test_model_info_tells_family_prompts_and_pooling(engines, family) -> None:
    info = engines[family].info
    entry = INDEX["families"][family]
    assert info.kind == "pooled" and info.modalities == ("text",)
    assert info.extra["family"] == family
    assert info.extra["prompts"] == entry["prompts"]
    assert info.extra["default_prompt_name"] == entry["default_prompt_name"]
    assert info.dim == REF[f"{family}.none.embeddings"].shape[1]
    # Qwen3-Embedding and EmbeddingGemma are Matryoshka models: smaller "dimensions" accepted
    assert info.extra["matryoshka"] is (family in ("qwen3", "gemma3_text"))


def test_qwen3_left_padding_is_nan_in_mlx_embeddings_right_padding_is_exact(engines) -> None:
    """Why the adapter pads right: stock mlx-embeddings 0.1.0, padded left as the published
    tokenizer does, returns NaN for every shorter row; our right-padded batch equals the
    reference (test above) and is finite."""
    engine = engines["qwen3"]
    adapter = engine.adapter
    assert adapter.tokenizer.padding_side == "left"
    enc = adapter.tokenizer(TEXTS[:3], padding=True)
    stock = engine.call(
        lambda a: np.array(
            a.model(
                mx.array(enc["input_ids"]), attention_mask=mx.array(enc["attention_mask"])
            ).text_embeds
        )
    )
    lengths = [sum(m) for m in enc["attention_mask"]]
    shorter = [i for i, n in enumerate(lengths) if n < max(lengths)]
    assert shorter and np.isnan(stock[shorter]).all()
    ours = engine.embed_blocking([engine.prepare(TextInput(t)) for t in TEXTS[:3]])
    assert all(np.isfinite(e.vectors).all() for e in ours)


def test_modernbert_uses_exact_gelu(engines) -> None:
    adapter = engines["modernbert"].adapter
    assert all(layer.mlp.act._approx == "none" for layer in adapter.model.model.layers)
    assert adapter.fixes and "GELU" in adapter.fixes[0]


def test_modernbert_transformers5_config_keys_translate() -> None:
    from app.engine.families import modernbert_config_overrides

    v5 = {
        "rope_parameters": {
            "full_attention": {"rope_type": "default", "rope_theta": 160000.0},
            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
        },
        "layer_types": ["full_attention", "sliding_attention", "sliding_attention"] * 2,
        "sliding_window": 64,
    }
    assert modernbert_config_overrides(v5) == {
        "global_rope_theta": 160000.0,
        "local_rope_theta": 10000.0,
        "local_attention": 128,
        "global_attn_every_n_layers": 3,
    }
    # transformers-4 keys are read as they are
    assert modernbert_config_overrides({"global_rope_theta": 1.0, "local_attention": 8}) == {}


def test_prompt_tokens_count_and_unknown_prompt_is_400(engines) -> None:
    engine = engines["modernbert"]
    plain = engine.prepare(TextInput("hello world"))
    query = engine.prepare(TextInput("hello world", prompt_name="query"))
    assert query.n_tokens > plain.n_tokens
    with pytest.raises(InvalidRequest) as err:
        engine.prepare(TextInput("hello", prompt_name="nope"))
    assert err.value.param == "prompt_name"


def test_token_ids_get_special_tokens_and_prompt(engines) -> None:
    engine = engines["qwen3"]
    tok = engine.adapter.tokenizer
    text = "What is the total amount due on invoice 4521?"
    ids = tuple(tok(text, add_special_tokens=False)["input_ids"])
    a = engine.prepare(TextInput(text))
    b = engine.prepare(TokenInput(ids))
    assert (
        a.payload.tolist()
        == b.payload.tolist()
        == [*ids, tok.convert_tokens_to_ids("<|endoftext|>")]
    )
    q = engine.prepare(TokenInput(ids, prompt_name="query"))
    prompt_ids = tok(INDEX["families"]["qwen3"]["prompts"]["query"], add_special_tokens=False)
    assert q.payload.tolist()[: len(prompt_ids["input_ids"])] == prompt_ids["input_ids"]


def test_truncation_keeps_the_closing_special_token(engines) -> None:
    engine = engines["xlm_roberta"]
    long = " ".join(["retrieval"] * 400)
    p = engine.prepare(TextInput(long), truncate=True)
    assert p.n_tokens == engine.info.max_tokens == 128
    assert p.payload[0] == 0 and p.payload[-1] == 2  # <s> ... </s>


def test_gemma3_sliding_layers_see_only_their_window(engines) -> None:
    """Without the window (what mlx-embeddings 0.1.0 does) inputs longer than it move off the
    reference; with it they match (test above)."""
    engine = engines["gemma3_text"]
    inner = engine.adapter.model.model
    assert inner.bidirectional_window == 4 // 2 + 1  # config sliding_window 4, as transformers
    prepared = engine.prepare(TextInput(TEXTS[-1]))
    ref = REF["gemma3_text.none.embeddings"][-1]
    window = inner.bidirectional_window
    try:
        inner.bidirectional_window = 10_000
        (unwindowed,) = engine.embed_blocking([prepared])
    finally:
        inner.bidirectional_window = window
    assert cosines(unwindowed.vectors, ref) < 0.99
    (windowed,) = engine.embed_blocking([prepared])
    assert cosines(windowed.vectors, ref) >= COSINE_MIN


def test_every_family_is_routed_and_has_a_golden() -> None:
    from app.engine import TEXT_FAMILY_NAMES
    from app.engine.families import TEXT_FAMILIES

    assert set(TEXT_FAMILY_NAMES) == set(TEXT_FAMILIES) == set(FAMILIES)
