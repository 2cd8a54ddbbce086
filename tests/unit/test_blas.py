"""app.blas: OpenBLAS is preloaded before mlx on Linux when found, and only then.

Loading a library is per process, so the real loads run in fresh subprocesses."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from app.blas import candidate_paths, find_openblas, preload_openblas

REPO = Path(__file__).resolve().parents[2]


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_off_and_other_systems_load_nothing(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="app.blas"):
        off = preload_openblas("off")
        mac = preload_openblas("auto", system="Darwin")
    assert not off.loaded and "bundled" in off.description
    assert not mac.loaded and "Darwin" in mac.description
    assert "BLAS:" in caplog.text  # which BLAS is in use is always logged


def test_accepts_a_settings_object() -> None:
    from app.settings import Settings

    assert not preload_openblas(Settings(model="m", blas="off")).loaded


def test_missing_library_is_reported_not_raised() -> None:
    assert find_openblas(["/nonexistent/libopenblas.so.0", "libdefinitely-not-here.so"]) is None
    status = preload_openblas("auto", paths=["/nonexistent/libopenblas.so.0"], system="Linux")
    assert not status.loaded and "libopenblas0-pthread" in status.description


def test_a_library_without_cblas_is_not_taken() -> None:
    import ctypes.util

    libm = ctypes.util.find_library("m")
    if libm is None:
        pytest.skip("no libm to probe")
    assert find_openblas([libm]) is None


def test_candidates_include_debian_paths_for_both_architectures() -> None:
    paths = candidate_paths()
    assert any("x86_64-linux-gnu" in p for p in paths)
    assert any("aarch64-linux-gnu" in p for p in paths)


needs_openblas = pytest.mark.skipif(
    sys.platform != "linux" or find_openblas() is None,
    reason="OpenBLAS not installed (apt-get install libopenblas0-pthread)",
)


@needs_openblas
def test_preload_makes_mlx_use_openblas_with_the_same_results() -> None:
    code = """
        import json, sys
        from app.blas import preload_openblas
        status = preload_openblas(sys.argv[1] if len(sys.argv) > 1 else "auto")
        import mlx.core as mx
        import numpy as np
        a = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
        out = np.array(mx.array(a) @ mx.array(a))
        maps = open("/proc/self/maps").read()
        print(json.dumps({"loaded": status.loaded, "openblas_mapped": "libopenblas" in maps,
                          "sum": float(out.astype(np.float64).sum()),
                          "ref": float((a.astype(np.float64) @ a).sum())}))
    """
    import json

    on = run_python(code)
    assert on.returncode == 0, on.stderr
    res = json.loads(on.stdout)
    assert res["loaded"] and res["openblas_mapped"]
    assert res["sum"] == pytest.approx(res["ref"], rel=1e-4)
    off = run_python(code.replace('sys.argv[1] if len(sys.argv) > 1 else "auto"', '"off"'))
    assert off.returncode == 0, off.stderr
    res_off = json.loads(off.stdout)
    assert not res_off["loaded"] and not res_off["openblas_mapped"]
    assert res_off["sum"] == pytest.approx(res["sum"], rel=1e-4)


@needs_openblas
def test_warns_when_mlx_was_imported_first() -> None:
    r = run_python(
        """
        import logging
        logging.basicConfig(level=logging.INFO)
        import mlx.core
        from app.blas import preload_openblas
        preload_openblas("auto")
        """
    )
    assert r.returncode == 0, r.stderr
    assert "mlx was imported before OpenBLAS" in r.stderr
