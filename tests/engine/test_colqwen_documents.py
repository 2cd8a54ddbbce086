"""ColQwen2.5 text as a DOCUMENT (input_type=document) equals colpali-engine's process_texts
(no query prefix/suffix), per tests/goldens/colqwen_text_documents.*; text stays a query by
default."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from app.engine import Engine, load_engine
from app.engine.base import TextInput, TokenInput
from app.settings import Settings

GOLDENS = Path(__file__).resolve().parents[1] / "goldens"
DOCS = json.loads((GOLDENS / "colqwen_text_documents.json").read_text())
DOC_REF = np.load(GOLDENS / "colqwen_text_documents.npz")
QUERY_REF = np.load(GOLDENS / "colqwen_reference.npz")
ITEMS = DOCS["items"]


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    e = load_engine(Settings(model=str(GOLDENS / "tiny-colqwen2.5")))
    e.wait_ready(120)
    yield e
    e.close()


def _min_cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))).min())


def test_colqwen_prompts_in_info(engine: Engine) -> None:
    assert engine.info.extra["default_prompt_name"] == "query"
    assert set(engine.info.extra["prompts"]) == {"query", "document"}


def test_text_documents_match_process_texts_alone_and_batched(engine: Engine) -> None:
    prepared = [engine.prepare(TextInput(i["text"], prompt_name="document")) for i in ITEMS]
    for p, item in zip(prepared, ITEMS, strict=True):
        assert p.payload.input_ids.tolist() == DOC_REF[f"{item['name']}.input_ids"].tolist()
    alone = [engine.embed_blocking([p])[0].vectors for p in prepared]
    batched = [e.vectors for e in engine.embed_blocking(prepared)]
    for item, a, b in zip(ITEMS, alone, batched, strict=True):
        ref = DOC_REF[f"{item['name']}.embeddings"]
        assert a.shape == b.shape == ref.shape
        assert _min_cos(a, ref) >= 0.9999 and _min_cos(b, ref) >= 0.9999, item["name"]


def test_text_is_a_query_by_default_and_with_input_type_query(engine: Engine) -> None:
    item = ITEMS[1]
    ref = QUERY_REF[f"{item['name']}.embeddings"]
    for prompt in (None, "query"):
        (emb,) = engine.embed_blocking([engine.prepare(TextInput(item["text"], prompt))])
        assert emb.vectors.shape == ref.shape and _min_cos(emb.vectors, ref) >= 0.9999
    doc = engine.prepare(TextInput(item["text"], "document"))
    assert doc.n_tokens < engine.prepare(TextInput(item["text"])).n_tokens


def test_token_ids_as_document_are_taken_as_they_are(engine: Engine) -> None:
    item = ITEMS[1]
    ids = tuple(int(i) for i in DOC_REF[f"{item['name']}.input_ids"])
    p = engine.prepare(TokenInput(ids, prompt_name="document"))
    assert p.payload.input_ids.tolist() == list(ids)
