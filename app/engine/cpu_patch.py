"""Put the fast CPU kernels into one loaded model, module by module.

Nothing in mlx, mlx-embeddings or mlx-vlm is changed for the process: each matching module of
*this* model gets a subclass whose ``__call__`` is the upstream function itself, re-bound to a
copy of its module's globals in which ``mx.softmax`` / ``nn.silu`` / ``swiglu`` /
``mx.fast.scaled_dot_product_attention`` ... name our kernels. The upstream forward code runs
unchanged; only the functions it looks up differ. GELU modules get their activation swapped.
"""

from __future__ import annotations

import importlib
import logging
import shutil
import time
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import mlx.core as mx
import mlx.nn as nn

from app.engine import cpu_kernels as K

log = logging.getLogger(__name__)


class _Namespace:
    """``base`` with some attributes replaced (stands in for ``mx`` / ``nn`` / ``mx.fast``)."""

    def __init__(self, base: Any, **overrides: Any) -> None:
        self._base = base
        self._overrides = overrides

    def __getattr__(self, name: str) -> Any:
        if name in self._overrides:
            return self._overrides[name]
        return getattr(self._base, name)


def _mlx_vlm_sdpa(original: Callable[..., mx.array]) -> Callable[..., mx.array]:
    """mlx_vlm.models.base.scaled_dot_product_attention: ours when no KV cache / sinks."""

    def sdpa(
        queries: mx.array,
        keys: mx.array,
        values: mx.array,
        cache: Any,
        scale: float,
        mask: Any,
        sinks: mx.array | None = None,
    ) -> mx.array:
        if cache is None and sinks is None:
            return K.scaled_dot_product_attention(queries, keys, values, scale=scale, mask=mask)
        return original(queries, keys, values, cache, scale=scale, mask=mask, sinks=sinks)

    return sdpa


def _fast_mx() -> _Namespace:
    fast = _Namespace(mx.fast, scaled_dot_product_attention=K.scaled_dot_product_attention)
    return _Namespace(mx, softmax=K.softmax, sigmoid=K.sigmoid, erf=K.erf, exp=K.exp, fast=fast)


def _fast_nn() -> _Namespace:
    return _Namespace(nn, gelu=K.gelu, silu=K.silu, sigmoid=K.sigmoid, softmax=K.softmax)


@dataclass(frozen=True)
class _Target:
    module: str
    cls: str
    names: tuple[str, ...]  # globals of the module that __call__ sees replaced


def _replacement(name: str, module_globals: dict[str, Any]) -> Any:
    if name == "mx":
        return _fast_mx()
    if name == "nn":
        return _fast_nn()
    if name == "swiglu":
        return K.swiglu
    if name == "scaled_dot_product_attention":
        return _mlx_vlm_sdpa(module_globals[name])
    raise KeyError(name)


# The modules of the supported families whose forwards call slow ops (profiled on MiniLM and
# ColQwen2.5 at Qwen2.5-VL-3B widths). A class that is not importable is skipped.
TARGETS: tuple[_Target, ...] = (
    _Target("mlx_embeddings.models.bert", "BertSelfAttention", ("mx",)),
    _Target("mlx_embeddings.models.xlm_roberta", "XLMRobertaSelfAttention", ("mx", "nn")),
    _Target("mlx_embeddings.models.xlm_roberta", "XLMRobertaIntermediate", ("nn",)),
    _Target("mlx_vlm.models.qwen2_5_vl.vision", "Attention", ("mx",)),
    _Target("mlx_vlm.models.qwen2_5_vl.vision", "MLP", ("nn",)),
    _Target("mlx_vlm.models.qwen2_5_vl.language", "Attention", ("scaled_dot_product_attention",)),
    _Target("mlx_vlm.models.mlp", "SwiGLUMLP", ("swiglu",)),
)


def _rebound_class(cls: type, names: tuple[str, ...]) -> type:
    fn = cls.__call__
    module_globals = fn.__globals__
    new_globals = dict(module_globals)
    for name in names:
        new_globals[name] = _replacement(name, module_globals)
    call = types.FunctionType(
        fn.__code__, new_globals, fn.__name__, fn.__defaults__, fn.__closure__
    )
    call.__kwdefaults__ = fn.__kwdefaults__
    call.__qualname__ = fn.__qualname__
    return type(f"Cpu{cls.__name__}", (cls,), {"__call__": call, "__module__": __name__})


def _classes() -> dict[type, type]:
    out: dict[type, type] = {}
    for t in TARGETS:
        try:
            cls = getattr(importlib.import_module(t.module), t.cls)
        except (ImportError, AttributeError):
            continue
        out[cls] = _rebound_class(cls, t.names)
    return out


class CpuGELU(nn.GELU):
    """``nn.GELU(approx="none")`` with the fast exact GELU."""

    def __call__(self, x: mx.array) -> mx.array:
        return K.gelu(x)


def install(model: nn.Module) -> dict[str, int]:
    """Swap the classes of this model's matching modules; returns counts by class name."""
    swaps = _classes()
    counts: dict[str, int] = {}
    for _, module in model.named_modules():
        cls = type(module)
        new: type | None = swaps.get(cls)
        if new is None and cls is nn.GELU and getattr(module, "_approx", None) == "none":
            new = CpuGELU
        if new is None:
            continue
        module.__class__ = new
        key = f"{cls.__module__.rsplit('.', 1)[-1]}.{cls.__name__}"
        counts[key] = counts.get(key, 0) + 1
    return counts


def uninstall(model: nn.Module) -> None:
    """Give every swapped module its upstream class back (benchmarks compare both)."""
    for _, module in model.named_modules():
        cls = type(module)
        if cls.__module__ == __name__:
            module.__class__ = cls.__mro__[1]


def compiler_available() -> bool:
    """MLX builds compiled CPU kernels with ``g++`` from PATH (``CXX`` is not read). Without it
    ``mx.compile`` still runs, but op by op: the kernels would then be slower than MLX's own."""
    return shutil.which("g++") is not None


def install_cpu_kernels(model: nn.Module, setting: str) -> str:
    """Install the kernels when the device is the CPU and ``setting`` allows; log and return
    what was done."""
    from app.engine.loading import is_cpu

    if setting == "off":
        desc = "off (--cpu-kernels off): MLX's own ops"
    elif not is_cpu():
        desc = "not used (GPU: MLX's own kernels are fast there)"
    elif not compiler_available():
        desc = "not used: no g++ on PATH, so mx.compile cannot build fused kernels; MLX's own ops"
    else:
        counts = install(model)
        listed = ", ".join(f"{n} x{c}" for n, c in sorted(counts.items())) or "no matching modules"
        desc = f"on ({listed})"
    log.info("CPU kernels: %s", desc)
    return desc


def warm_up(adapter: Any, items: list[Any]) -> None:
    """One forward at load time, so g++ builds the fused kernels then and not on the first
    request (18 s on a machine whose MLX kernel cache, $TMPDIR/mlx, is empty; ~0.1 s after)."""
    start = time.perf_counter()
    adapter.forward([adapter.prepare(item) for item in items])
    log.info("CPU kernels ready (warm-up forward %.1f s)", time.perf_counter() - start)
