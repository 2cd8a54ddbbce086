"""MaxSim / cosine scoring and ranking (app.scoring)."""

from __future__ import annotations

import numpy as np
import pytest

from app.scoring import cosine, cosine_many, maxsim, maxsim_many, rank, score_many


def _unit(rng: np.random.Generator, *shape: int) -> np.ndarray:
    x = rng.standard_normal(shape).astype(np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_maxsim_is_sum_of_best_dot_products() -> None:
    rng = np.random.default_rng(1)
    q, d = _unit(rng, 5, 16), _unit(rng, 9, 16)
    expected = sum(max(float(qi @ dj) for dj in d) for qi in q)
    assert maxsim(q, d) == pytest.approx(expected, abs=1e-5)


def test_maxsim_many_equals_each_pair() -> None:
    rng = np.random.default_rng(2)
    q = _unit(rng, 7, 32)
    docs = [_unit(rng, n, 32) for n in (1, 3, 40, 12)]
    got = maxsim_many(q, docs)
    np.testing.assert_allclose(got, [maxsim(q, d) for d in docs], rtol=1e-6, atol=1e-5)
    assert score_many(q, docs).tolist() == got.tolist()


def test_maxsim_keeps_negative_best_scores() -> None:
    q = np.array([[1.0, 0.0]], dtype=np.float32)
    d = np.array([[-1.0, 0.0], [-0.5, 0.5]], dtype=np.float32)
    assert maxsim(q, d) == pytest.approx(-0.5)  # no zero padding row offers 0


def test_maxsim_rejects_mismatched_widths() -> None:
    with pytest.raises(ValueError):
        maxsim(np.ones((2, 3)), np.ones((2, 4)))


def test_cosine_matches_definition_and_zero_vectors() -> None:
    rng = np.random.default_rng(3)
    a, docs = rng.standard_normal(8), rng.standard_normal((4, 8))
    expected = docs @ a / (np.linalg.norm(docs, axis=1) * np.linalg.norm(a))
    np.testing.assert_allclose(cosine_many(a, list(docs)), expected, rtol=1e-5)
    assert cosine(a, np.zeros(8)) == 0.0
    assert cosine_many(a, [np.zeros(8)]).tolist() == [0.0]


def test_rank_descending_and_stable_on_ties() -> None:
    assert rank(np.array([0.5, 2.0, 0.5, 2.0, 1.0])) == [1, 3, 4, 0, 2]
    assert rank(np.array([0.5, 2.0, 0.5]), top_n=2) == [1, 0]
    assert rank(np.array([1.0]), top_n=5) == [0]
