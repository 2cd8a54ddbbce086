"""input_type / prompt_name over HTTP with the official openai client, on the real engine with
the tiny ModernBERT (prompts ``search_query: `` / ``search_document: ``): the vectors equal
sentence-transformers' with the prompt applied, and ``usage`` counts the prompt tokens."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from http_servers import Served, serve_real_model

GOLDENS = Path(__file__).resolve().parents[1] / "goldens"
INDEX = json.loads((GOLDENS / "text_families_reference.json").read_text())
REF = np.load(GOLDENS / "text_families_reference.npz")
FAMILY = INDEX["families"]["modernbert"]
TEXTS: list[str] = INDEX["texts"]
NAME = "tiny/modernbert"


@pytest.fixture(scope="module")
def server(tiny_models_dir: Path) -> Iterator[Served]:
    yield from serve_real_model(str(tiny_models_dir / FAMILY["model_dir"]), NAME)


def _vectors(resp) -> np.ndarray:
    return np.stack([np.asarray(d.embedding, dtype=np.float32) for d in resp.data])


@pytest.mark.parametrize(
    ("extra", "mode"),
    [
        ({}, "none"),
        ({"input_type": "query"}, "query"),
        ({"input_type": "search_document"}, "document"),
        ({"prompt_name": "query"}, "query"),
    ],
)
def test_vectors_equal_reference_with_prompt(server: Served, extra, mode) -> None:
    resp = server.openai().embeddings.create(model=NAME, input=TEXTS, extra_body=extra)
    ours, ref = _vectors(resp), REF[f"modernbert.{mode}.embeddings"]
    cos = (ours * ref).sum(1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(ref, axis=1))
    assert cos.min() >= 0.9999
    expected_tokens = sum(len(ids) for ids in FAMILY["modes"][mode]["input_ids"])
    assert resp.usage.prompt_tokens == resp.usage.total_tokens == expected_tokens


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input_type": "question"}, "input_type"),
        ({"input_type": 3}, "input_type"),
        ({"prompt_name": "nope"}, "prompt_name"),
        ({"input_type": "query", "prompt_name": "document"}, "prompt_name"),
    ],
)
def test_bad_prompt_choice_is_400_with_param(server: Served, body, param) -> None:
    r = httpx.post(
        server.url + "/v1/embeddings", json={"model": NAME, "input": "hi", **body}, timeout=30
    )
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"


def test_model_card_lists_the_prompts(server: Served) -> None:
    card = httpx.get(server.url + "/v1/models/" + NAME, timeout=30).json()
    assert card["prompts"] == FAMILY["prompts"]
    assert card["default_prompt_name"] is None
    assert (card["family"], card["kind"], card["modalities"]) == ("modernbert", "pooled", ["text"])
    assert card["dimensions"] == REF["modernbert.none.embeddings"].shape[1]
    assert (card["max_tokens"], card["pooling"], card["normalized"]) == (128, "mean", True)
    assert card["matryoshka"] is False
