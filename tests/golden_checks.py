"""The goldens bound the engine tests share: per-vector cosine and max abs difference."""

from __future__ import annotations

import numpy as np

COSINE_MIN = 0.9999
ABS_MAX = 1e-4


def cosines(ours: np.ndarray, ref: np.ndarray) -> np.ndarray:
    return (ours * ref).sum(-1) / (np.linalg.norm(ours, axis=-1) * np.linalg.norm(ref, axis=-1))


def assert_matches(ours: np.ndarray, ref: np.ndarray, what: str) -> None:
    """Same shape, finite, every vector's cosine >= COSINE_MIN and |diff| <= ABS_MAX."""
    assert ours.shape == ref.shape, f"{what}: shape {ours.shape} != {ref.shape}"
    assert np.isfinite(ours).all(), f"{what}: not finite"
    cos = cosines(ours, ref)
    assert cos.min() >= COSINE_MIN, f"{what}: min cosine {cos.min():.6f}"
    assert np.abs(ours - ref).max() <= ABS_MAX, f"{what}: max abs diff {np.abs(ours - ref).max()}"


def golden_inputs(index: dict, kind: str) -> list:
    """The inputs a goldens index names: its 6 committed PNGs for ``"image"``, else its texts
    under the prompt ``kind`` (``query``, ``document``)."""
    from pathlib import Path

    from PIL import Image

    from app.engine.base import ImageInput, TextInput

    if kind == "image":
        images = Path(__file__).resolve().parent / "goldens" / "images"
        out = []
        for name in index["images"]:
            with Image.open(images / f"{name}.png") as f:
                out.append(ImageInput(f.convert("RGB")))
        return out
    return [TextInput(t, prompt_name=kind) for t in index["texts"]]


def golden_engine(models_dir, index: dict):
    """The engine of the tiny model a goldens index was made from (a fixture generator), after
    checking it is that very model (same files digest)."""
    from script_modules import load_script

    from app.engine import load_engine
    from app.settings import Settings

    path = models_dir / index["model_dir"]
    digest = load_script("make_goldens").model_dir_digest(path)
    assert digest == index["model_digest"], "make_tiny_models.py changed: rerun make_goldens.py"
    engine = load_engine(Settings(model=str(path)))
    engine.wait_ready(120)
    yield engine
    engine.close()
