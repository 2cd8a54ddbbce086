"""Loading a model directory or hub id through mlx-embeddings' real loading path."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_map

log = logging.getLogger(__name__)


def resolve_model_path(model: str) -> Path:
    """A local directory as is; otherwise the hub snapshot (downloaded by mlx-embeddings)."""
    from mlx_embeddings.utils import get_model_path

    path = Path(model).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"{path} has no config.json: not a model directory")
        return path
    try:
        return Path(get_model_path(model))
    except Exception as exc:  # offline, unknown repo, gated...
        raise FileNotFoundError(
            f"could not find model {model!r}: not a local directory and the hub download "
            f"failed ({type(exc).__name__}: {exc})"
        ) from exc


def read_json(path: Path) -> dict[str, Any]:
    with open(path) as f:
        return json.load(f)


def load_mlx_model(
    path: Path, model_config: dict[str, Any] | None = None, *, repo_name: str | None = None
) -> nn.Module:
    """``model_config`` overrides config.json keys (e.g. a family's translated keys);
    ``repo_name`` is what mlx-embeddings sees as the repo (SigLIP reads sizes from it)."""
    from mlx_embeddings.utils import load_model

    return load_model(
        path, lazy=False, model_config=model_config or {}, path_to_repo=repo_name or str(path)
    )


def weights_fingerprint(model_id: str, path: Path) -> str:
    """Model id + a hash of the weight files' names, sizes and head bytes (cheap, stable)."""
    h = hashlib.sha256(model_id.encode())
    for f in sorted(path.glob("**/*.safetensors")):
        st = f.stat()
        h.update(f.relative_to(path).as_posix().encode())
        h.update(str(st.st_size).encode())
        with open(f, "rb") as fh:
            h.update(fh.read(1 << 16))
    config = path / "config.json"
    if config.exists():
        h.update(config.read_bytes())
    return h.hexdigest()[:32]


def bound_mlx_cache(limit_mb: int) -> None:
    """Bound MLX's buffer cache (without it, odd-shaped batches keep growing it)."""
    if limit_mb > 0:
        mx.set_cache_limit(limit_mb << 20)


def release_mlx_cache() -> None:
    from app.malloc_trim import trim

    mx.clear_cache()
    trim()


def is_cpu() -> bool:
    return mx.default_device() == mx.cpu or os.environ.get("MLX_EMB_FORCE_CPU") == "1"


_DTYPES = {"float32": mx.float32, "bfloat16": mx.bfloat16, "float16": mx.float16}


def checkpoint_dtype(model: nn.Module) -> mx.Dtype:
    for _, v in tree_flatten(model.parameters()):
        if mx.issubdtype(v.dtype, mx.floating):
            return v.dtype
    return mx.float32


def apply_dtype(model: nn.Module, setting: str) -> mx.Dtype:
    """Cast floating parameters to the compute dtype; 'auto' = float32 on CPU (MLX bf16/fp16 is
    11-17x slower there), the checkpoint's own dtype on Metal. Quantized weights stay packed."""
    if setting == "auto":
        target = mx.float32 if is_cpu() else checkpoint_dtype(model)
    else:
        target = _DTYPES[setting]

    def cast(v: mx.array) -> mx.array:
        if mx.issubdtype(v.dtype, mx.floating) and v.dtype != target:
            return v.astype(target)
        return v

    model.update(tree_map(cast, model.parameters()))
    mx.eval(model.parameters())
    return target


def dtype_name(dtype: mx.Dtype) -> str:
    return {mx.float32: "float32", mx.bfloat16: "bfloat16", mx.float16: "float16"}.get(
        dtype, str(dtype)
    )
