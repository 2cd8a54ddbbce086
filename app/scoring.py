"""Scores between a query and documents, from their vectors (pure numpy, no model).

* Multi-vector (late interaction): MaxSim, the sum over query tokens of the best dot product
  with any document token. This is colpali-engine's ``score_multi_vector`` for one pair; it
  pads a batch with zero vectors, so a padded document also offers a dot product of 0 to each
  query token, which changes a score only when every real dot product of a token is negative.
  We score each pair on its real tokens.
* Pooled: cosine similarity (sentence-transformers' ``util.cos_sim``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def maxsim(query: np.ndarray, document: np.ndarray) -> float:
    """MaxSim of a (q_tokens, dim) query against a (d_tokens, dim) document."""
    if query.ndim != 2 or document.ndim != 2 or query.shape[1] != document.shape[1]:
        raise ValueError(f"maxsim needs (n, dim) matrices, got {query.shape} and {document.shape}")
    sims = np.asarray(query, dtype=np.float32) @ np.asarray(document, dtype=np.float32).T
    return float(sims.max(axis=1).sum(dtype=np.float64))


def maxsim_many(query: np.ndarray, documents: Sequence[np.ndarray]) -> np.ndarray:
    """MaxSim of one query against each document: one matrix product over all their tokens."""
    if not documents:
        return np.zeros(0, dtype=np.float32)
    lengths = np.array([len(d) for d in documents])
    if lengths.min() == 0:
        raise ValueError("a document has no vectors")
    stacked = np.concatenate([np.asarray(d, dtype=np.float32) for d in documents])
    sims = np.asarray(query, dtype=np.float32) @ stacked.T  # (q_tokens, all doc tokens)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    best = np.maximum.reduceat(sims, starts, axis=1)  # (q_tokens, n_docs)
    return best.sum(axis=0, dtype=np.float64).astype(np.float32)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 or nb == 0.0:
        return 0.0
    return float(np.dot(a, b) / (na * nb))


def cosine_many(query: np.ndarray, documents: Sequence[np.ndarray]) -> np.ndarray:
    if not documents:
        return np.zeros(0, dtype=np.float32)
    docs = np.stack([np.asarray(d, dtype=np.float32) for d in documents])
    q = np.asarray(query, dtype=np.float32)
    norms = np.linalg.norm(docs, axis=1) * np.linalg.norm(q)
    dots = docs @ q
    return np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0)


def score_many(query: np.ndarray, documents: Sequence[np.ndarray]) -> np.ndarray:
    """MaxSim for multi-vector (2-D) vectors, cosine for pooled (1-D) ones."""
    if query.ndim == 2:
        return maxsim_many(query, documents)
    return cosine_many(query, documents)


def rank(scores: np.ndarray, top_n: int | None = None) -> list[int]:
    """Indices by descending score; equal scores keep the documents' order (stable)."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    return [int(i) for i in order[: top_n if top_n is not None else len(order)]]
