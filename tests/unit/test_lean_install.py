"""The lean install: what pyproject's ``exclude-dependencies`` drops is really never imported.

A fresh interpreter imports the server, the worker and the ingest CLI, loads the tiny ColQwen2.5
and the tiny BERT through the real loading path (mlx-embeddings ``load_model``, the mlx-vlm
classes app/engine uses), embeds a text and an image, and reports ``sys.modules``. None of the
excluded packages may be there; neither may torch. If a new mlx-vlm starts importing one of them
at load time, this test fails and the package must come back into the lock.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

# distribution name -> top-level module(s) it would install
EXCLUDED_MODULES = {
    "cryptography": ["cryptography"],
    "datasets": ["datasets"],
    "fastapi": ["fastapi"],
    "llguidance": ["llguidance"],
    "miniaudio": ["miniaudio"],
    "mlx-audio": ["mlx_audio"],
    "opencv-python": ["cv2"],
    "python-multipart": ["multipart", "python_multipart"],
    "starlette": ["starlette"],
    "uvicorn": ["uvicorn"],
}
# reached only through the excluded ones (or never wanted at all)
ALSO_ABSENT = ["pyarrow", "pandas", "scipy", "sounddevice", "torch", "tensorflow", "jax"]
# dev-only packages (the client tests) never load at run time
ALSO_ABSENT += ["langchain_core", "langchain_openai", "langsmith"]

_PROBE = r"""
import json, sys
from pathlib import Path

import app.backends, app.cli, app.server, app.ingest.cli, app.jobs.worker, workers.cli  # noqa: F401
from PIL import Image

from app.engine import load_engine
from app.engine.base import ImageInput, TextInput
from app.settings import Settings

shapes = {}
for name in ("tiny-colqwen2.5", "tiny-bert"):
    engine = load_engine(Settings(model=str(Path(sys.argv[1]) / name), blas="off"))
    try:
        engine.wait_ready(120)
        items = [TextInput("hello world")]
        if "image" in engine.info.modalities:
            items.append(ImageInput(Image.new("RGB", (56, 56), (200, 30, 30))))
        out = engine.embed_blocking([engine.prepare(i) for i in items])
        shapes[name] = [list(e.vectors.shape) for e in out]
    finally:
        engine.close()
print(json.dumps({"modules": sorted(sys.modules), "shapes": shapes}))
"""


def test_excluded_list_matches_pyproject():
    tool_uv = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["uv"]
    assert sorted(tool_uv["exclude-dependencies"]) == sorted(EXCLUDED_MODULES)
    lock = tomllib.loads((REPO_ROOT / "uv.lock").read_text())
    locked = {p["name"] for p in lock["package"]}
    dropped = set(EXCLUDED_MODULES) | {"pyarrow", "pandas", "scipy", "sounddevice", "torch"}
    assert not locked & dropped, f"back in uv.lock: {sorted(locked & dropped)}"
    assert "mlx-vlm" in locked and "mlx-embeddings" in locked


def test_server_worker_ingest_and_model_loading_import_none_of_the_excluded(tiny_models_dir):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, str(tiny_models_dir)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    # the models really ran: ColQwen gives a text and an image multi-vector, BERT one vector
    assert len(report["shapes"]["tiny-colqwen2.5"]) == 2
    assert all(len(s) == 2 for s in report["shapes"]["tiny-colqwen2.5"])
    assert len(report["shapes"]["tiny-bert"]) == 1 and len(report["shapes"]["tiny-bert"][0]) == 1
    tops = {m.split(".")[0] for m in report["modules"]}
    assert {"mlx_vlm", "mlx_embeddings", "sanic", "rq", "qdrant_client"} <= tops
    unwanted = [m for mods in EXCLUDED_MODULES.values() for m in mods] + ALSO_ABSENT
    assert not tops & set(unwanted), f"imported: {sorted(tops & set(unwanted))}"


@pytest.mark.slow
@pytest.mark.skipif(
    not sys.platform.startswith("linux") or shutil.which("uv") is None,
    reason="the 350 MB goal is for Linux x86_64; needs uv",
)
def test_fresh_checkout_no_dev_venv_is_under_350_mb():
    """``uv sync --locked --no-dev`` in a copy of the checkout (from uv's cache)."""
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "measure_install.py")],
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["mb"] <= 350, report
    assert report["packages"] <= 80, report
