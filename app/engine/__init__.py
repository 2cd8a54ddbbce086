"""The only package that imports mlx. ``load_engine`` returns a started Engine whose MLX thread
loads the model (so every mlx array lives on that one thread)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from app.engine.base import Adapter
from app.engine.runner import Engine
from app.settings import Settings

log = logging.getLogger(__name__)

# config.json model_type of the pooled text families (app.engine.families, which imports mlx)
TEXT_FAMILY_NAMES = ("bert", "xlm_roberta", "modernbert", "qwen3", "gemma3_text", "llama_bidirec")
# multi-vector text models in pylate's ColBERT layout (app.engine.colbert)
COLBERT_NAMES = ("lfm2",)
# model types mlx-embeddings ships that are refused, and why (none today)
REFUSED: dict[str, str] = {}


def load_adapter(settings: Settings) -> Adapter:
    """Pick the adapter by the model's config.json ``model_type`` (call on the MLX thread)."""
    from app.engine.loading import resolve_model_path

    path: Path = resolve_model_path(settings.model)
    config = json.loads((path / "config.json").read_text())
    model_type = config.get("model_type", "")
    if model_type in ("colqwen2_5", "colqwen2.5"):
        from app.engine.colqwen import ColQwenAdapter

        adapter: Adapter = ColQwenAdapter(path, settings)
    elif model_type in ("colidefics3", "idefics3"):
        from app.engine.colidefics3 import ColIdefics3Adapter, is_colidefics3

        if not is_colidefics3(config):
            raise ValueError(f"{settings.model}: an idefics3 model that is not a ColIdefics3")
        adapter = ColIdefics3Adapter(path, settings)
    elif model_type == "qwen3_vl":
        from app.engine.qwen3_vl import Qwen3VLAdapter

        adapter = Qwen3VLAdapter(path, settings)
    elif model_type == "llama_nemotron_vl":
        from app.engine.nemotron_vl import NemotronVLAdapter

        adapter = NemotronVLAdapter(path, settings)
    elif model_type == "siglip":
        from app.engine.siglip import SiglipAdapter

        adapter = SiglipAdapter(path, settings)
    elif model_type in COLBERT_NAMES:
        from app.engine.colbert import ColbertTextAdapter

        adapter = ColbertTextAdapter(path, settings)
    elif model_type.replace("-", "_") in TEXT_FAMILY_NAMES:
        from app.engine.pooled import PooledTextAdapter

        adapter = PooledTextAdapter(path, settings)
    elif model_type in REFUSED:
        raise ValueError(f"{settings.model}: {REFUSED[model_type]}")
    else:
        raise ValueError(
            f"model type {model_type!r} of {settings.model} is not supported "
            f"(supported: colqwen2_5, colidefics3, siglip, qwen3_vl, llama_nemotron_vl, "
            f"{', '.join(COLBERT_NAMES + TEXT_FAMILY_NAMES)})"
        )
    info = adapter.info
    log.info(
        "loaded %s (%s, %s, dim %d, dtype %s) from %s",
        info.name,
        model_type,
        info.kind,
        info.dim,
        info.dtype,
        path,
    )
    return adapter


def load_engine(settings: Settings, *, start: bool = True) -> Engine:
    """The engine of every model in ``settings`` (``--model`` repeated), keyed by served name;
    ``engine.view(name)`` is one model's API."""

    def loader(model_settings: Settings, first: bool):
        def load() -> Adapter:
            if first:
                from app.engine.loading import bound_mlx_cache

                bound_mlx_cache(settings.mlx_cache_limit_mb)
            return load_adapter(model_settings)

        return load

    loaders = {s.model_name: loader(s, i == 0) for i, s in enumerate(settings.per_model())}

    def release_memory() -> None:
        from app.engine.loading import release_mlx_cache

        release_mlx_cache()

    engine = Engine(
        loaders,
        max_batch_size=settings.max_batch_size,
        max_wait_ms=settings.max_wait_ms,
        max_queue=settings.max_queue,
        max_bulk_queue=settings.max_bulk_queue,
        max_batch_tokens=settings.max_batch_tokens,
        busy_bulk_batch_size=settings.busy_bulk_batch_size or None,
        release_memory=release_memory,
    )
    return engine.start() if start else engine
