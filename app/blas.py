"""Load OpenBLAS ahead of mlx on Linux.

``mlx[cpu]`` wheels for Linux link a bundled reference BLAS (netlib): a real-width ColQwen2.5
layer runs about 26x slower than with OpenBLAS. If OpenBLAS is loaded into the process with
``RTLD_GLOBAL`` *before* mlx's shared library is, the dynamic linker resolves mlx's
``cblas_sgemm`` & co. to OpenBLAS instead (results are identical up to float rounding order).
Install it with ``apt-get install libopenblas0-pthread``.

Copies bundled inside wheels (``scipy_openblas``, ``numpy.libs``) are not used: they export
their symbols with a prefix (``scipy_cblas_sgemm64_``), so they would not interpose.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.settings import Settings

log = logging.getLogger(__name__)

CANDIDATE_PATHS: tuple[str, ...] = (
    "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/x86_64-linux-gnu/openblas-openmp/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/openblas-openmp/libopenblas.so.0",
    "/usr/lib64/libopenblas.so.0",
    "/usr/lib64/libopenblasp.so.0",
    "/usr/lib/libopenblas.so.0",
)

# Handles stay referenced for the life of the process (a CDLL that is garbage-collected is not
# unloaded, but keeping it makes the intent plain).
_loaded: list[ctypes.CDLL] = []


@dataclass(frozen=True)
class BlasStatus:
    loaded: bool
    path: str | None
    description: str


def candidate_paths() -> list[str]:
    """Places OpenBLAS is looked for, most specific first, without duplicates."""
    paths = list(CANDIDATE_PATHS)
    found = ctypes.util.find_library("openblas")
    if found:
        paths.append(found)
    seen: set[str] = set()
    out = []
    for p in paths:
        if p not in seen:
            seen.add(p)
            out.append(p)
    return out


def _exports_cblas(lib: ctypes.CDLL) -> bool:
    try:
        lib.cblas_sgemm  # noqa: B018 - attribute lookup is the check
    except AttributeError:
        return False
    return True


def find_openblas(paths: list[str] | None = None) -> str | None:
    for path in candidate_paths() if paths is None else paths:
        if os.path.isabs(path) and not Path(path).exists():
            continue
        try:
            lib = ctypes.CDLL(path, mode=os.RTLD_LAZY | os.RTLD_LOCAL)
        except OSError:
            continue
        if _exports_cblas(lib):
            return path
    return None


def preload_openblas(
    settings: Settings | str = "auto",
    *,
    paths: list[str] | None = None,
    system: str | None = None,
) -> BlasStatus:
    """Load OpenBLAS globally so mlx (imported later) uses it, per ``settings.blas`` ('auto' or
    'off'; a plain string works too). Never raises: returns (and logs) what happened."""
    mode = settings if isinstance(settings, str) else settings.blas
    system = platform.system() if system is None else system
    if system != "Linux":
        status = BlasStatus(False, None, f"{system}: mlx uses its own BLAS (Accelerate/Metal)")
    elif mode == "off":
        status = BlasStatus(False, None, "mlx's bundled reference BLAS (--blas off)")
    elif mode != "auto":
        status = BlasStatus(False, None, f"unknown --blas {mode!r}; using mlx's bundled BLAS")
    else:
        status = _preload(paths)
    log.info("BLAS: %s", status.description)
    return status


def _preload(paths: list[str] | None) -> BlasStatus:
    if "mlx.core" in sys.modules or "mlx" in sys.modules:
        log.warning(
            "mlx was imported before OpenBLAS could be preloaded; it may keep its slow bundled "
            "BLAS (preload_openblas must run before anything imports mlx)"
        )
    path = find_openblas(paths)
    if path is None:
        return BlasStatus(
            False,
            None,
            "mlx's bundled reference BLAS (slow; apt-get install libopenblas0-pthread for a "
            "large CPU speed-up)",
        )
    try:
        lib = ctypes.CDLL(path, mode=os.RTLD_NOW | os.RTLD_GLOBAL)
    except OSError as exc:  # found a moment ago, so this is unusual
        return BlasStatus(False, None, f"mlx's bundled BLAS (loading {path} failed: {exc})")
    _loaded.append(lib)
    return BlasStatus(True, path, f"OpenBLAS preloaded from {path}{_config(lib)}")


def _config(lib: ctypes.CDLL) -> str:
    try:
        fn = lib.openblas_get_config
    except AttributeError:
        return ""
    fn.restype = ctypes.c_char_p
    try:
        raw = fn()
    except Exception:  # pragma: no cover - defensive: a foreign symbol of that name
        return ""
    return f" ({raw.decode(errors='replace').strip()})" if raw else ""
