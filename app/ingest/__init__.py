"""Bulk ingestion of document pages into Qdrant through the embeddings server's jobs API.

``mlx-embeddings-ingest`` (``app.ingest.cli``) walks files, submits pages as embedding jobs,
pools the page vectors client-side (``pooling``) and upserts them with the multi-vector schema
of ``collection``; ``search`` runs the two-stage query (pooled prefetch, MaxSim rerank).
"""
