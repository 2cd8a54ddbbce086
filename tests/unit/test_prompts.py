"""Which prompt a request asks for, and that the prompt reaches the cache key and the jobs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.cache import item_key
from app.engine.base import ModelInfo, TextInput, TokenInput
from app.engine.prompts import read_st_prompts, resolve_prompt_name, with_prompt
from app.errors import InvalidRequest
from app.jobs.items import JobItem
from app.pipeline import cache_keys


def info(prompts: dict[str, str], default: str | None = None) -> ModelInfo:
    return ModelInfo(
        name="m",
        kind="pooled",
        dim=4,
        modalities=("text",),
        max_tokens=8,
        fingerprint="f",
        extra={"prompts": prompts, "default_prompt_name": default},
    )


GEMMA = info(
    {
        "query": "task: search result | query: ",
        "document": "title: none | text: ",
        "STS": "task: sentence similarity | query: ",
    }
)


@pytest.mark.parametrize(
    ("input_type", "prompt_name", "expected"),
    [
        ("query", None, "query"),
        ("document", None, "document"),
        ("search_query", None, "query"),
        ("search_document", None, "document"),
        (None, "STS", "STS"),
        (None, None, None),
    ],
)
def test_resolve(input_type, prompt_name, expected) -> None:
    assert resolve_prompt_name(GEMMA, input_type, prompt_name) == expected


def test_default_prompt_name_applies_without_a_choice() -> None:
    assert resolve_prompt_name(info({"query": "q: "}, "query"), None, None) == "query"


@pytest.mark.parametrize(
    ("input_type", "prompt_name", "param"),
    [
        ("question", None, "input_type"),
        (None, "nope", "prompt_name"),
        ("query", "STS", "prompt_name"),
    ],
)
def test_bad_choices_are_400_with_param(input_type, prompt_name, param) -> None:
    with pytest.raises(InvalidRequest) as err:
        resolve_prompt_name(GEMMA, input_type, prompt_name)
    assert err.value.param == param


def test_st_prompts_read_like_sentence_transformers(tmp_path: Path) -> None:
    assert read_st_prompts(tmp_path) == ({"query": "", "document": ""}, None)
    (tmp_path / "config_sentence_transformers.json").write_text(
        json.dumps({"prompts": {"query": "q: ", "x": "y"}, "default_prompt_name": "x"})
    )
    assert read_st_prompts(tmp_path) == ({"query": "q: ", "document": "", "x": "y"}, "x")


def test_prompt_is_part_of_the_cache_key() -> None:
    items = [TextInput("a"), TextInput("a", "query"), TextInput("a", "document")]
    keys = cache_keys("fp", items, truncate=False)
    assert len(set(keys)) == 3
    # a text without a chosen prompt keeps its earlier key (role "query")
    assert keys[0] == item_key(
        "fp", TextInput("a"), prompt_role="query", options={"truncate": False}
    )


def test_with_prompt_and_jobs_carry_the_prompt() -> None:
    items = with_prompt([TextInput("a"), TokenInput((1, 2))], "query")
    assert [i.prompt_name for i in items] == ["query", "query"]
    decoded = [JobItem.of(x, None, f"input[{i}]").to_input() for i, x in enumerate(items)]
    assert decoded == items
