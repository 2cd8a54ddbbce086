"""app.engine.cpu_kernels against float64 references and against MLX's own ops, over wide
ranges, extremes and special values."""

from __future__ import annotations

import math

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from app.engine import cpu_kernels as K


@pytest.fixture(autouse=True)
def fast_path_for_any_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """Small arrays normally go to MLX's own ops; here every array takes the kernels."""
    monkeypatch.setattr(K, "_SMALL", 0)


_erf64 = np.frompyfunc(math.erf, 1, 1)
_erfc64 = np.frompyfunc(math.erfc, 1, 1)


def erf64(x: np.ndarray) -> np.ndarray:
    return _erf64(x.astype(np.float64)).astype(np.float64)


def erfc64(x: np.ndarray) -> np.ndarray:
    return _erfc64(x.astype(np.float64)).astype(np.float64)


def sigmoid64(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    e = np.exp(-np.abs(x))
    return np.where(x < 0, e / (1 + e), 1 / (1 + e))


def grid(lo: float, hi: float, n: int = 200_001) -> np.ndarray:
    rng = np.random.default_rng(0)
    dense = np.linspace(lo, hi, n, dtype=np.float32)
    rand = rng.uniform(lo, hi, n // 4).astype(np.float32)
    return np.concatenate([dense, rand])


def run(fn, x: np.ndarray) -> np.ndarray:
    return np.array(fn(mx.array(x))).astype(np.float64)


def ulps(got: np.ndarray, ref: np.ndarray) -> np.ndarray:
    return np.abs(got - ref) / np.spacing(np.abs(ref).astype(np.float32)).astype(np.float64)


SPECIAL = np.array(
    [0.0, -0.0, np.nan, 1e-30, -1e-30, 1e-45, 3e38, -3e38, 1e4, -1e4], dtype=np.float32
)


def test_exp_within_one_ulp_of_float64() -> None:
    x = grid(-87.3, 88.7)
    assert ulps(run(K.exp, x), np.exp(x.astype(np.float64))).max() <= 1.01


def test_exp_agrees_with_mlx_and_its_special_values() -> None:
    # MLX's own exp reduces in base 2 without a split ln 2: ~4e-6 relative error at |x| ~ 80
    # (ours is within 1 ulp there, above), so the two are compared where MLX is accurate.
    x = grid(-20, 20)
    ref = run(mx.exp, x)
    np.testing.assert_allclose(run(K.exp, x), ref, rtol=1.5e-6, atol=0)
    s = np.array([0, np.inf, -np.inf, np.nan, 88.8, 200, -88.0, -1e4, -3e38], np.float32)
    got = run(K.exp, s)
    np.testing.assert_array_equal(got, [1, np.inf, 0, np.nan, np.inf, np.inf, 0, 0, 0])
    # The very top of float32, where MLX's own exp already says inf:
    top = np.array([88.5, 88.7], np.float32)
    np.testing.assert_allclose(run(K.exp, top), np.exp(top.astype(np.float64)), rtol=2e-7)


def test_erf_within_two_ulp_of_float64_and_close_to_mlx() -> None:
    x = np.concatenate([grid(-6, 6), grid(-1e-3, 1e-3, 20_001), SPECIAL[~np.isnan(SPECIAL)]])
    got, ref = run(K.erf, x), erf64(x)
    assert np.abs(got - ref).max() <= 1.2e-7
    small = np.abs(ref) > 1e-30
    assert ulps(got[small], ref[small]).max() <= 2.0
    assert np.abs(got - run(mx.erf, x)).max() <= 1e-6
    s = np.array([np.inf, -np.inf, np.nan, 0.0], np.float32)
    np.testing.assert_array_equal(run(K.erf, s), [1, -1, np.nan, 0])


def test_gelu_exact_to_float32_rounding_and_close_to_nn_gelu() -> None:
    x = np.concatenate([grid(-12, 12), grid(-100, 100), SPECIAL[~np.isnan(SPECIAL)]])
    got = run(K.gelu, x)
    ref = 0.5 * x.astype(np.float64) * erfc64(-x / np.sqrt(2))
    # absolute error at float32 rounding of the output scale (1 ulp of max(1, |x|) / 2)
    assert (np.abs(got - ref) / np.maximum(1.0, np.abs(x))).max() <= 3e-7
    finite = np.abs(x) < 1e38  # nn.gelu overflows in x * (1 + erf) up there; ours does not
    assert np.abs(got - run(nn.gelu, x))[finite].max() <= 1e-6
    assert np.isnan(run(K.gelu, np.array([np.nan, np.inf, -np.inf], np.float32))).all()


@pytest.mark.parametrize("name", ["sigmoid", "silu"])
def test_sigmoid_and_silu(name: str) -> None:
    x = np.concatenate([grid(-30, 30), grid(-100, 100), SPECIAL[~np.isnan(SPECIAL)]])
    fast, mlx_fn = {"sigmoid": (K.sigmoid, mx.sigmoid), "silu": (K.silu, nn.silu)}[name]
    got = run(fast, x)
    ref = sigmoid64(x) * (x.astype(np.float64) if name == "silu" else 1.0)
    scale = np.maximum(1.0, np.abs(ref))
    assert (np.abs(got - ref) / scale).max() <= 1.5e-7
    normal = np.abs(ref) > 1e-30
    assert ulps(got[normal], ref[normal]).max() <= 4.0
    assert (np.abs(got - run(mlx_fn, x)) / scale).max() <= 1e-6
    # NaN stays NaN; +-inf (never out of the finite matmuls these follow) give NaN too: the
    # fused loops clamp with arithmetic, as a branch would stop their vectorisation.
    s = np.array([np.nan, np.inf, -np.inf], np.float32)
    assert np.isnan(run(fast, s)).all()


def test_swiglu() -> None:
    rng = np.random.default_rng(1)
    g, u = (mx.array(rng.normal(0, 4, (64, 300)).astype(np.float32)) for _ in range(2))
    np.testing.assert_allclose(
        np.array(K.swiglu(g, u)), np.array(nn.silu(g) * u), rtol=1e-6, atol=1e-6
    )


def test_kernels_on_any_shape_layout_and_other_dtypes() -> None:
    rng = np.random.default_rng(2)
    base = mx.array(rng.normal(0, 3, (6, 40, 50)).astype(np.float32))
    for x in (base, base.transpose(2, 0, 1), base[:, ::3, 1:], base[0, 0, :7], base.reshape(-1)):
        np.testing.assert_allclose(np.array(K.gelu(x)), np.array(nn.gelu(x)), atol=1e-6)
        np.testing.assert_allclose(np.array(K.silu(x)), np.array(nn.silu(x)), atol=1e-6)
    half = base.astype(mx.bfloat16)  # not float32: MLX's own op, unchanged
    assert K.gelu(half).dtype == mx.bfloat16
    np.testing.assert_array_equal(
        np.array(K.gelu(half).astype(mx.float32)), np.array(nn.gelu(half).astype(mx.float32))
    )


def _logits(shape: tuple[int, ...], scale: float, seed: int = 3) -> np.ndarray:
    return (np.random.default_rng(seed).normal(0, scale, shape)).astype(np.float32)


@pytest.mark.parametrize("scale", [1.0, 30.0, 1e4])
def test_softmax_matches_mx_softmax(scale: float) -> None:
    x = _logits((4, 6, 33, 33), scale)
    x[..., 20:] = -np.inf  # masked keys
    x[0, 0, 3, :] = -1e4  # a row of large negatives (the BERT additive mask)
    for axis in (-1, 1):
        a, ref = K.softmax(mx.array(x), axis=axis), mx.softmax(mx.array(x), axis=axis)
        np.testing.assert_allclose(np.array(a), np.array(ref), atol=1e-6, rtol=0)
    assert np.array(K.softmax(mx.array(x))).sum(axis=-1) == pytest.approx(1.0, abs=1e-5)


def test_softmax_of_a_fully_masked_row_is_nan_like_mlx() -> None:
    x = np.full((2, 5), -np.inf, np.float32)
    x[1] = [0, 1, 2, 3, 4]
    ours, ref = np.array(K.softmax(mx.array(x))), np.array(mx.softmax(mx.array(x), axis=-1))
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(ref))
    np.testing.assert_allclose(ours[1], ref[1], atol=1e-7)


def _qkv(B: int, n_q: int, n_kv: int, L: int, S: int, D: int):
    rng = np.random.default_rng(4)
    q = mx.array(rng.normal(0, 1, (B, n_q, L, D)).astype(np.float32))
    k = mx.array(rng.normal(0, 1, (B, n_kv, S, D)).astype(np.float32))
    v = mx.array(rng.normal(0, 1, (B, n_kv, S, D)).astype(np.float32))
    return q, k, v


def _masks(B: int, L: int, S: int) -> dict[str, object]:
    lengths = np.array([S, S - 3][:B])
    key_real = np.arange(S)[None, :] < lengths[:, None]
    causal = np.tril(np.ones((L, S), bool), S - L)
    boolean = causal[None, None] & key_real[:, None, None, :]
    additive = np.where(key_real, 0.0, -10000.0).astype(np.float32)[:, None, None, :]
    return {
        "none": None,
        "causal": "causal",
        "bool": mx.array(boolean),
        "additive": mx.array(additive),
    }


@pytest.mark.parametrize("chunked", [False, True], ids=["whole", "query-blocks"])
@pytest.mark.parametrize("heads", [(4, 4), (4, 2)], ids=["mha", "gqa"])
@pytest.mark.parametrize("mask_kind", ["none", "causal", "bool", "additive"])
def test_attention_matches_mlx_fast_sdpa(
    heads: tuple[int, int], mask_kind: str, chunked: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    B, L, S, D = 2, 40, 40, 16
    if chunked:
        monkeypatch.setattr(K, "_CHUNK", 1)  # per head, 16 query rows at a time: 3 blocks
    q, k, v = _qkv(B, heads[0], heads[1], L, S, D)
    mask = _masks(B, L, S)[mask_kind]
    scale = D**-0.5
    ours = K.scaled_dot_product_attention(q, k, v, scale=scale, mask=mask)
    ref = mx.fast.scaled_dot_product_attention(q, k, v, scale=scale, mask=mask)
    np.testing.assert_allclose(np.array(ours), np.array(ref), atol=1e-6, rtol=0)


def test_attention_with_more_keys_than_queries_and_causal() -> None:
    q, k, v = _qkv(1, 2, 2, 3, 8, 8)
    ours = K.scaled_dot_product_attention(q, k, v, scale=0.3, mask="causal")
    ref = mx.fast.scaled_dot_product_attention(q, k, v, scale=0.3, mask="causal")
    np.testing.assert_allclose(np.array(ours), np.array(ref), atol=1e-6, rtol=0)


def test_attention_over_an_empty_split() -> None:
    q, k, v = _qkv(1, 2, 2, 0, 0, 8)
    out = K.scaled_dot_product_attention(q, k, v, scale=0.3, mask=None)
    assert out.shape == (1, 2, 0, 8)


def test_small_arrays_use_mlx_own_ops(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(K, "_SMALL", 4096)
    x = mx.array(np.linspace(-5, 5, 100, dtype=np.float32))
    np.testing.assert_array_equal(np.array(K.gelu(x)), np.array(nn.gelu(x)))
    np.testing.assert_array_equal(np.array(K.softmax(x)), np.array(mx.softmax(x, axis=-1)))
