"""MLX allocator counters (cheap reads, safe from any thread)."""

from __future__ import annotations

import mlx.core as mx


def mlx_memory() -> dict[str, int]:
    return {
        "active": int(mx.get_active_memory()),
        "cache": int(mx.get_cache_memory()),
        "peak": int(mx.get_peak_memory()),
    }


def active_bytes() -> int | None:
    """MLX's active memory now (None if it cannot be read)."""
    try:
        return int(mx.get_active_memory())
    except Exception:
        return None
