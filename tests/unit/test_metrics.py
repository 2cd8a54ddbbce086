"""app.metrics pieces without HTTP: Redis down, MLX memory, RSS."""

from __future__ import annotations

from fake_adapter import FakeAdapter, fake_engine
from prometheus_client.parser import text_string_to_metric_families

from app.backends import Backends
from app.metrics import Metrics, _mlx_memory, resident_memory_bytes
from app.redis_embedded import RedisHandle
from app.settings import Settings


def _samples(metrics: Metrics) -> dict[str, float]:
    text = metrics.exposition().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            key = s.name + "".join(f"[{k}={v}]" for k, v in sorted(s.labels.items()))
            out[key] = s.value
    return out


def test_a_scrape_with_redis_down_says_redis_up_0_and_keeps_the_rest() -> None:
    engine = fake_engine(FakeAdapter(), max_wait_ms=0)
    engine.wait_ready(10)
    try:
        settings = Settings(model="fake")
        backends = Backends(settings, RedisHandle(kind="external", url="redis://127.0.0.1:1/0"))
        metrics = Metrics(engine, backends)
        metrics.batch_done("bulk", 4, 30, 40)
        s = _samples(metrics)
        assert s["mlxemb_redis_up"] == 0
        assert "mlxemb_jobs[state=queued]" not in s  # unknown, not zero
        assert s["mlxemb_model_ready"] == 1
        assert s["mlxemb_queue_depth[lane=bulk]"] == 0
        assert s["mlxemb_batch_size_sum[lane=bulk]"] == 4
        assert s["mlxemb_batch_padding_ratio_sum[lane=bulk]"] == 0.25
        assert s["mlxemb_cache_hits_total"] == 0
    finally:
        engine.close()


def test_mlx_memory_is_read_once_mlx_is_loaded() -> None:
    import mlx.core as mx

    mx.eval(mx.ones((256, 256)))
    mem = _mlx_memory()
    assert mem is not None and set(mem) == {"active", "cache", "peak"}
    assert all(isinstance(v, int) and v >= 0 for v in mem.values())


def test_resident_memory_is_plausible() -> None:
    rss = resident_memory_bytes()
    assert rss is not None and 10 << 20 < rss < 1 << 40
