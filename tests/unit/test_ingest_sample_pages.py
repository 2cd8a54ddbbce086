"""The committed sample pages in images/ are what scripts/make_sample_pages.py draws."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from script_modules import load_script

REPO_ROOT = Path(__file__).resolve().parents[2]


def _script():
    return load_script("make_sample_pages")


def test_sample_pages_are_committed_small_and_reproducible(tmp_path: Path) -> None:
    written = _script().make_all(tmp_path)
    assert len(written) == 6
    for path in written:
        committed = REPO_ROOT / "images" / path.name
        assert committed.is_file(), f"run scripts/make_sample_pages.py and commit {committed}"
        assert committed.stat().st_size < 150 * 1024
        a = np.asarray(Image.open(path).convert("RGB"))
        b = np.asarray(Image.open(committed).convert("RGB"))
        assert a.shape == b.shape and np.array_equal(a, b), path.name
    assert sorted(p.name for p in (REPO_ROOT / "images").glob("*.png")) == sorted(
        p.name for p in written
    )
