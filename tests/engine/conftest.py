"""Engines on the tiny ColQwen2.5, the tiny BERT and the real all-MiniLM-L6-v2 (one per session)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from app.engine import Engine, load_engine
from app.settings import Settings


def _engine(path: Path, **kw) -> Iterator[Engine]:
    engine = load_engine(Settings(model=str(path), **kw))
    engine.wait_ready(120)
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def colqwen_engine(tiny_colqwen_path: Path) -> Iterator[Engine]:
    yield from _engine(tiny_colqwen_path)


@pytest.fixture(scope="session")
def minilm_engine(minilm_path: Path) -> Iterator[Engine]:
    yield from _engine(minilm_path)


@pytest.fixture(scope="session")
def tiny_bert_engine(tiny_bert_path: Path) -> Iterator[Engine]:
    yield from _engine(tiny_bert_path)
