"""Query / document prompts: which prompt a request asks for, and the model's own prompts.

A request may send ``input_type`` (``query`` | ``document``, the Cohere/Voyage name; Cohere's
``search_query`` / ``search_document`` are accepted too) or ``prompt_name`` (any prompt the model
defines, as in sentence-transformers and TEI). Without either, the model's
``default_prompt_name`` applies (from ``config_sentence_transformers.json``, or the family's
default: ColQwen2.5 text is a query). The resolved prompt name travels on each text item
(``TextInput.prompt_name`` / ``TokenInput.prompt_name``), so it reaches the cache key, the jobs
and the adapter's ``prepare`` with the item. Images are always documents.

No mlx here: the HTTP layer imports this.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from app.engine.base import EngineInput, ModelInfo, TextInput, TokenInput
from app.errors import InvalidRequest

INPUT_TYPES = {
    "query": "query",
    "document": "document",
    "search_query": "query",
    "search_document": "document",
}


def read_st_prompts(path: Path) -> tuple[dict[str, str], str | None]:
    """(prompts, default_prompt_name) from ``config_sentence_transformers.json``; like
    sentence-transformers (5+), ``query`` and ``document`` exist always (empty by default)."""
    f = path / "config_sentence_transformers.json"
    config: dict[str, Any] = json.loads(f.read_text()) if f.exists() else {}
    prompts = {"query": "", "document": ""}
    prompts |= {str(k): str(v) for k, v in (config.get("prompts") or {}).items()}
    default = config.get("default_prompt_name")
    if default is not None and default not in prompts:
        raise ValueError(
            f"{f}: default_prompt_name {default!r} is not one of its prompts {sorted(prompts)}"
        )
    return prompts, default


def resolve_prompt_name(
    info: ModelInfo, input_type: str | None, prompt_name: str | None
) -> str | None:
    """The prompt name a request asks for (None: no prompt). Raises InvalidRequest (400)."""
    prompts: dict[str, str] = info.extra.get("prompts") or {}
    if input_type is not None and prompt_name is not None:
        raise InvalidRequest(
            "send either 'input_type' or 'prompt_name', not both", param="prompt_name"
        )
    if input_type is not None:
        kind = INPUT_TYPES.get(input_type)
        if kind is None:
            raise InvalidRequest(
                f"invalid input_type {input_type!r}: must be 'query' or 'document'",
                param="input_type",
            )
        # A model without a prompt for this kind embeds queries and documents alike.
        return kind if kind in prompts else None
    if prompt_name is not None:
        if prompt_name not in prompts:
            known = ", ".join(repr(p) for p in sorted(prompts)) or "none"
            raise InvalidRequest(
                f"model {info.name!r} has no prompt {prompt_name!r} (its prompts: {known})",
                param="prompt_name",
            )
        return prompt_name
    return info.extra.get("default_prompt_name")


T = TypeVar("T", bound=Any)


def with_prompt(items: Sequence[T], prompt_name: str | None) -> list[T]:
    """Copies of resolved request items whose text/token inputs carry ``prompt_name``.

    ``items`` are ``app.inputs.ResolvedItem``-like (an ``item`` field) or engine inputs."""
    out = []
    for it in items:
        inner = getattr(it, "item", None)
        if inner is not None:
            out.append(replace(it, item=set_prompt(inner, prompt_name)))
        else:
            out.append(set_prompt(it, prompt_name))
    return out


def set_prompt(item: EngineInput, prompt_name: str | None) -> EngineInput:
    if isinstance(item, TextInput | TokenInput):
        return replace(item, prompt_name=prompt_name)
    return item


def prompt_role(item: EngineInput) -> str | None:
    """The cache-key role of an item's prompt (None: the item has no prompt chosen)."""
    name = getattr(item, "prompt_name", None)
    return None if name is None else f"prompt:{name}"
