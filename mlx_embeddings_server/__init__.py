"""Compatibility package: the earlier project's entry point ``python -m
mlx_embeddings_server.main``. The server lives in ``app``."""
