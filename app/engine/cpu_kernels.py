"""Fast float32 exp / erf / GELU / sigmoid / SiLU / softmax / attention for MLX on x86 CPUs.

MLX's x86 CPU backend evaluates transcendental functions one element at a time (its SIMD width
there is 1), so ``mx.exp``, ``mx.erf``, ``nn.gelu`` and ``mx.softmax`` run 2-10x slower than the
matmuls around them allow. The same functions written from multiply / add / compare and bit
operations only, inside ``mx.compile``, become fused loops that g++ vectorises. What decides
the speed of those loops (measured): any branch in one stops its vectorisation (``mx.where``,
and ``mx.minimum`` / ``mx.maximum``, which test for NaN first): blend with a 0/1 float and clamp
with arithmetic instead; ``floor`` is a libm call (round by the 1.5 * 2**23 trick instead); and
MLX's fuser takes at most ~11 dependent ops into one loop and cuts deeper graphs into several,
with arrays written between them (Estrin's scheme instead of Horner's, and GELU as three
shallow compiled stages).

Accuracy is at float32 rounding level (the tests hold it against float64):
- ``exp``: Cody-Waite reduction (two-part ln 2) and the Cephes ``expf`` polynomial: <= 1 ulp.
  MLX's own reduces in base 2 without the split: ~4e-6 relative error at |x| ~ 80.
- ``erf``: an odd polynomial below 0.921875 (<= 1 ulp), above it 1 - erfc with erfc a degree-14
  Chebyshev fit on [0.921875, 4] (|error| <= 8.4e-8): <= 2 ulp overall. MLX's ``erf`` is
  Abramowitz-Stegun 7.1.26 (|error| up to 5e-7 measured).
- ``gelu`` = max(x, 0) - |x| erfc(|x| / sqrt 2) / 2 above the split, so the negative tail does
  not cancel in ``1 + erf``: |error| <= 3e-7 * max(1, |x|).
- ``sigmoid`` / ``silu`` from exp(-|x|): <= 4 ulp (MLX's: up to 57 ulp).

Only float32 arrays of 4096+ elements take the fast path; other dtypes and tiny arrays call
MLX's own function.
"""

from __future__ import annotations

import math
from functools import cache
from typing import Any

import mlx.core as mx
import mlx.nn as nn

_LOG2E = 1.4426950408889634
_LN2_HI = 0.693359375  # exact in float32 (few mantissa bits): n * _LN2_HI is exact
_LN2_LO = -2.12194440e-4
_EXP_HI = 88.72283  # exp(x) overflows float32 above
_EXP_LO = -87.33654  # below, exp(x) is subnormal; MLX's own exp returns 0 from -88 on
_EXP_P = (
    1.9875691500e-4,
    1.3981999507e-3,
    8.3334519073e-3,
    4.1665795894e-2,
    1.6666665459e-1,
    5.0000001201e-1,
)

_ERF_SPLIT = 0.921875
# erf(z) = z + z * Q(z*z) for |z| < _ERF_SPLIT (least-squares fit on Chebyshev nodes, float64).
_ERF_Q = (
    8.438703662250191e-05,
    -0.0008160769357345998,
    0.005202834494411945,
    -0.02686024084687233,
    0.11283713579177856,
    -0.37612634897232056,
    0.12837916612625122,
)
# erfc(t) = P((t - _ERFC_MID) * _ERFC_SCALE) for t in [_ERF_SPLIT, 4] (Chebyshev fit, degree 14;
# |error| <= 8.4e-8): polynomial only, no exp, so it fuses into one vectorised loop.
_ERFC_HI = 4.0
_ERFC_MID = 2.4609375
_ERFC_SCALE = 0.6497461795806885
_ERFC_P = (
    -0.00044859678018838167,
    4.830184479942545e-05,
    0.0030327008571475744,
    -0.0030350859742611647,
    -0.005639246199280024,
    0.014723925851285458,
    -0.011144722811877728,
    -0.009575164876878262,
    0.03900202363729477,
    -0.058542754501104355,
    0.055447056889534,
    -0.03571317717432976,
    0.015413071028888226,
    -0.0040691993199288845,
    0.0005008687148801982,
)


def _horner(x: mx.array, coeffs: tuple[float, ...]) -> mx.array:
    p = x * coeffs[0] + coeffs[1]
    for c in coeffs[2:]:
        p = p * x + c
    return p


def _estrin(x: mx.array, coeffs: tuple[float, ...]) -> mx.array:
    """The polynomial with ``coeffs`` (highest degree first) by Estrin's scheme: dependency
    depth ~2 log2(n) instead of Horner's 2n. mx.compile fuses at most ~11 ops deep into one
    loop; deeper graphs are cut into several loops with arrays written between them."""
    terms: list[mx.array | float] = list(reversed(coeffs))  # lowest degree first
    power: mx.array = x
    while len(terms) > 1:
        paired: list[mx.array | float] = []
        for i in range(0, len(terms) - 1, 2):
            paired.append(terms[i] + terms[i + 1] * power)
        if len(terms) % 2:
            paired.append(terms[-1])
        terms = paired
        if len(terms) > 1:
            power = power * power
    out = terms[0]
    assert isinstance(out, mx.array)
    return out


def _f(cond: mx.array) -> mx.array:
    """A condition as 0.0 / 1.0: blending with it is branch-free."""
    return cond.astype(mx.float32)


# Inside a fused loop, one branch (``mx.where``, and ``mx.minimum`` / ``mx.maximum``, which test
# for NaN first) stops g++ from vectorising the whole loop (measured 2-4x). So the kernels
# clamp with arithmetic: exact where the clamp is inactive, finite inputs only. +-inf is
# handled outside the fused loops where it can occur (exp, erf, softmax masks); GELU, sigmoid
# and SiLU, which only ever follow a finite matmul here, give NaN for +-inf.
def _relu(u: mx.array) -> mx.array:
    return 0.5 * u + 0.5 * mx.abs(u)  # exactly u or 0, and no overflow at 3e38


def _at_most(u: mx.array, c: float) -> mx.array:
    return u - _relu(u - c)


def _at_least(u: mx.array, c: float) -> mx.array:
    return u + _relu(c - u)


def _exp_core(x: mx.array, top: bool = False) -> mx.array:
    """exp(x) for finite x <= 88 (NaN stays NaN); ``top=True`` extends it to x <= _EXP_HI."""
    xc = _at_least(x, _EXP_LO)
    if top:
        xc = _at_most(xc, _EXP_HI)
    # Round to nearest by the 1.5 * 2**23 trick (std::floor is a libm call per element).
    n = (xc * _LOG2E + 12582912.0) - 12582912.0
    r = xc - n * _LN2_HI
    r = r - n * _LN2_LO
    p = _estrin(r, _EXP_P) * (r * r) + r + 1.0
    # 2**n from the exponent bits. n reaches 128 only near the top: there 2**(n-1) * 2.
    big = _f(n > 127.0) if top else None
    e = n - big if big is not None else n
    scale = mx.view(mx.left_shift(e.astype(mx.int32) + 127, 23), mx.float32)
    y = p * scale * _f(x >= _EXP_LO)  # below: 0 (true exp is subnormal there)
    return y * (1.0 + big) if big is not None else y


def _exp_impl(x: mx.array) -> mx.array:
    return _exp_core(x, top=True)


def _erfc_large(t: mx.array) -> mx.array:
    """erfc(t) for t >= _ERF_SPLIT; 0 above 4, where erfc(t) < 1.6e-8."""
    tc = _at_most(t, _ERFC_HI)
    return _estrin((tc - _ERFC_MID) * _ERFC_SCALE, _ERFC_P) * _f(t <= _ERFC_HI)


def _erf_small(z: mx.array) -> mx.array:
    return z + z * _estrin(z * z, _ERF_Q)


def _erf_impl(x: mx.array) -> mx.array:
    """erf of x in [-10, 10] (the caller clips: erf is +-1 in float32 beyond)."""
    t = mx.abs(x)
    w = _f(t < _ERF_SPLIT)
    sign = x / (t + 1e-30)  # +-1 exactly, 0 at 0
    large = sign * (1.0 - _erfc_large(t))
    small = _erf_small(x * w)
    return w * small + (1.0 - w) * large  # exact for w in {0, 1}


# GELU in three compiled stages with two arrays between them, each stage shallow enough to be
# one vectorised loop; as one graph MLX's fuser cut it into seven loops, one of them strided
# with 14 inputs (measured 14-16 ms against 7.6 ms on 1.28M elements).
_INV_SQRT2 = 0.7071067811865476
_GELU_SPLIT = _ERF_SPLIT / _INV_SQRT2  # |x| below: the small branch
_GELU_HI = _ERFC_HI / _INV_SQRT2  # |x| above: erfc = 0


def _gelu_a(x: mx.array) -> tuple[mx.array, mx.array]:
    """The two polynomial variables: erfc's (clamped) and erf's small-branch z*z."""
    ax = mx.abs(x)
    tc = _at_most(ax * _INV_SQRT2, _ERFC_HI)
    zs = (x * _INV_SQRT2) * _f(ax < _GELU_SPLIT)
    return tc * _ERFC_SCALE - _ERFC_MID * _ERFC_SCALE, zs * zs


def _gelu_b(u: mx.array, s: mx.array) -> tuple[mx.array, mx.array]:
    return _estrin(u, _ERFC_P), _estrin(s, _ERF_Q)


def _gelu_c(x: mx.array, erfc_p: mx.array, erf_q: mx.array) -> mx.array:
    ax = mx.abs(x)
    w = _f(ax < _GELU_SPLIT)
    zs = (x * _INV_SQRT2) * w
    small = (0.5 * x) * (1.0 + (zs + zs * erf_q))  # x (1 + erf(z)) / 2
    # x * Phi(x) = max(x, 0) - |x| * erfc(|x| / sqrt 2) / 2: no cancellation for x < 0.
    large = (0.5 * x + 0.5 * ax) - (0.5 * ax) * (erfc_p * _f(ax <= _GELU_HI))
    return w * small + (1.0 - w) * large  # exact for w in {0, 1}


def _sigmoid_impl(x: mx.array) -> mx.array:
    e = _exp_core(-mx.abs(x))
    neg = _f(x < 0)
    return (neg * e + (1.0 - neg)) / (1.0 + e)  # e / (1 + e) below 0, 1 / (1 + e) above


def _silu_impl(x: mx.array) -> mx.array:
    return x * _sigmoid_impl(x)


def _swiglu_impl(gate: mx.array, x: mx.array) -> mx.array:
    return _silu_impl(gate) * x


def _exp_shifted_impl(x: mx.array, m: mx.array) -> mx.array:
    return _exp_core(x - m)


@cache
def _compiled(name: str) -> Any:
    """Compiled on first use (never at import). Not shapeless (``mx.view`` cannot be): a new
    shape is traced again (~1 ms), but its loop is the same C++, built by g++ only once."""
    impls = {
        "exp": _exp_impl,
        "erf": _erf_impl,
        "gelu_a": _gelu_a,
        "gelu_b": _gelu_b,
        "gelu_c": _gelu_c,
        "sigmoid": _sigmoid_impl,
        "silu": _silu_impl,
        "swiglu": _swiglu_impl,
        "exp_shifted": _exp_shifted_impl,
    }
    return mx.compile(impls[name])


# Below this many elements a fused call costs more (dispatch, ~40 us) than MLX's own op.
_SMALL = 4096


def _f32(*xs: mx.array) -> bool:
    return all(x.dtype == mx.float32 for x in xs) and xs[0].size >= _SMALL


def exp(x: mx.array) -> mx.array:
    if not _f32(x):
        return mx.exp(x)
    y = _compiled("exp")(mx.clip(x, -1e30, 1e30))  # +-inf out of the fused loop
    return mx.where(x > _EXP_HI, math.inf, y)


def erf(x: mx.array) -> mx.array:
    return _compiled("erf")(mx.clip(x, -10.0, 10.0)) if _f32(x) else mx.erf(x)


def gelu(x: mx.array) -> mx.array:
    if not _f32(x):
        return nn.gelu(x)
    u, s = _compiled("gelu_a")(x)
    erfc_p, erf_q = _compiled("gelu_b")(u, s)
    return _compiled("gelu_c")(x, erfc_p, erf_q)


def sigmoid(x: mx.array) -> mx.array:
    return _compiled("sigmoid")(x) if _f32(x) else mx.sigmoid(x)


def silu(x: mx.array) -> mx.array:
    return _compiled("silu")(x) if _f32(x) else nn.silu(x)


def swiglu(gate: mx.array, x: mx.array) -> mx.array:
    return _compiled("swiglu")(gate, x) if _f32(gate, x) else nn.silu(gate) * x


def softmax(x: mx.array, axis: int = -1, precise: bool = False) -> mx.array:
    """Softmax over one axis; rows that are all -inf give NaN, as ``mx.softmax`` does."""
    if not _f32(x) or not isinstance(axis, int):
        return mx.softmax(x, axis=axis, precise=precise)
    m = mx.max(x, axis=axis, keepdims=True)
    # -inf (masked) to a finite -1e30 outside the fused loop; a row that is all -inf keeps
    # m = -inf, so it comes out NaN, as with mx.softmax.
    e = _compiled("exp_shifted")(mx.maximum(x, -1e30), m)
    return e / mx.sum(e, axis=axis, keepdims=True)


def scaled_dot_product_attention(
    q: mx.array,
    k: mx.array,
    v: mx.array,
    *,
    scale: float,
    mask: mx.array | str | None = None,
    **kwargs: Any,
) -> mx.array:
    """``mx.fast.scaled_dot_product_attention``'s CPU computation (scale q, q @ k^T, mask,
    softmax, @ v, grouped-query heads) with the fast softmax. Anything it does not cover
    (sinks, string masks other than "causal", non-float32, empty sequences: the vision tower
    splits by window and some splits are empty) goes to MLX's own."""
    if (
        kwargs.get("sinks") is not None
        or not _f32(q, k, v)
        or q.ndim != 4
        or 0 in q.shape[2:3] + k.shape[2:3]
    ):
        return mx.fast.scaled_dot_product_attention(q, k, v, scale=scale, mask=mask, **kwargs)
    if isinstance(mask, str) and mask != "causal":
        return mx.fast.scaled_dot_product_attention(q, k, v, scale=scale, mask=mask, **kwargs)
    B, n_q, L, D = q.shape
    n_kv, S = k.shape[1], k.shape[2]
    q = q * scale
    if n_q != n_kv:
        rep = n_q // n_kv
        q = q.reshape(B, n_kv, rep, L, D)
        k = mx.expand_dims(k, 2)
        v = mx.expand_dims(v, 2)
        if isinstance(mask, mx.array) and mask.ndim >= 3:
            mask = mx.expand_dims(mask, -3)
    kt = mx.swapaxes(k, -1, -2)
    if B * n_q * L * S <= _CHUNK:
        out = _attend(q, kt, v, mask, 0, S - L)
    else:
        # Full-attention vision blocks: (16, 3072, 3072) scores are 600 MB. One (kv) head and
        # a block of query rows at a time, evaluated at once, stays in cache (measured 1.4x
        # faster than the whole at once, which is slower than MLX's own).
        rows = max(16, _CHUNK // (B * (n_q // n_kv) * S))
        heads = []
        for g in range(q.shape[1]):
            qg, ktg, vg = q[:, g : g + 1], kt[:, g : g + 1], v[:, g : g + 1]
            mg = mask
            if isinstance(mask, mx.array) and mask.ndim >= 4 and mask.shape[1] != 1:
                mg = mask[:, g : g + 1]
            parts = []
            for start in range(0, L, rows):
                part = _attend(qg[..., start : start + rows, :], ktg, vg, mg, start, S - L)
                mx.eval(part)
                parts.append(part)
            heads.append(mx.concatenate(parts, axis=-2))
        out = mx.concatenate(heads, axis=1)
    if n_q != n_kv:
        out = out.reshape(B, n_q, L, D)
    return out


# Masked scores: finite, so the fused exp needs no inf handling (a fully masked row would give
# uniform weights instead of NaN; the masks here always leave each query a key).
_MASKED = -1e30
_CHUNK = 1 << 21  # most attention scores computed at once (8 MB)


def _attend(
    q: mx.array, kt: mx.array, v: mx.array, mask: mx.array | str | None, start: int, shift: int
) -> mx.array:
    """softmax(q @ kt + mask) @ v for the query rows start.. of q (already scaled), with the
    normalisation applied to the (rows, D) output instead of the (rows, S) weights."""
    scores = q @ kt
    L = q.shape[-2]
    if isinstance(mask, str):  # "causal": query row i sees keys <= i + shift
        causal = mx.arange(start, start + L)[:, None] + shift >= mx.arange(kt.shape[-1])[None, :]
        scores = mx.where(causal, scores, _MASKED)
    elif mask is not None:
        if mask.ndim >= 2 and mask.shape[-2] != 1:
            mask = mask[..., start : start + L, :]
        if mask.dtype == mx.bool_:
            scores = mx.where(mask, scores, _MASKED)
        else:
            scores = mx.maximum(scores + mask.astype(scores.dtype), _MASKED)
    m = mx.max(scores, axis=-1, keepdims=True)
    e = _compiled("exp_shifted")(scores, m)
    return (e @ v) / mx.sum(e, axis=-1, keepdims=True)
