"""Measure the install a fresh checkout gets: venv size, package count, ``uv sync`` time.

Usage::

    uv run python scripts/measure_install.py [--dev] [--cold] [--platform native|macos-arm64]

* default (``--platform native``): copies the working tree (tracked + untracked, not
  ignored) to a temp dir and runs
  ``uv sync --locked --no-dev`` there with the normal uv cache (the project's own sync has
  cached everything it needs), then reports ``du`` of ``.venv``.
* ``--dev``: include the dev group (what ``uv run pytest`` installs).
* ``--cold``: an empty ``UV_CACHE_DIR``, so every wheel is downloaded from PyPI (needs network);
  the time reported is then a real first ``uv sync``.
* ``--platform macos-arm64``: install the lock's macOS arm64 set (``uv export`` then
  ``uv pip install --target --python-platform aarch64-apple-darwin``), for a size measured on
  Linux; downloads the macOS wheels (needs network unless cached).

Prints one JSON line: {"mode", "seconds", "mb", "packages"}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def copy_tree(dest: Path) -> None:
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    for raw in files:
        if not raw:
            continue
        rel = Path(os.fsdecode(raw))
        src = REPO_ROOT / rel
        if not src.is_file():
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / rel)


def du_mb(path: Path) -> int:
    out = subprocess.run(["du", "-sk", str(path)], check=True, capture_output=True, text=True)
    return round(int(out.stdout.split()[0]) / 1024)


def count_packages(site: Path) -> int:
    return sum(1 for p in site.glob("*.dist-info") if p.is_dir())


def measure(dev: bool, cold: bool, platform: str) -> dict[str, object]:
    uv = shutil.which("uv")
    if uv is None:
        raise SystemExit("uv is not on PATH")
    with tempfile.TemporaryDirectory(prefix="mlxemb-install-") as tmp:
        work = Path(tmp) / "checkout"
        work.mkdir()
        copy_tree(work)
        env = {k: v for k, v in os.environ.items() if not k.startswith("VIRTUAL_ENV")}
        env.pop("UV_PROJECT_ENVIRONMENT", None)
        if cold:
            env["UV_CACHE_DIR"] = str(Path(tmp) / "uv-cache")
        groups = [] if dev else ["--no-dev"]
        suffix = (" +dev" if dev else "") + (" cold" if cold else "")
        if platform == "native":
            cmd = [uv, "sync", "--locked", "--quiet", *groups]
            start = time.monotonic()
            subprocess.run(cmd, cwd=work, env=env, check=True)
            seconds = time.monotonic() - start
            venv = work / ".venv"
            site = next(venv.glob("lib/python3*/site-packages"))
            return {
                "mode": f"{sys.platform}-{os.uname().machine}{suffix}",
                "seconds": round(seconds, 1),
                "mb": du_mb(venv),
                "packages": count_packages(site),
            }
        req = Path(tmp) / "requirements.txt"
        export = [uv, "export", "--frozen", "--no-emit-project", "--quiet", "-o", str(req)]
        subprocess.run([*export, *groups], cwd=work, env=env, check=True)
        target = Path(tmp) / "target"
        cmd = [
            uv, "pip", "install", "--quiet", "--no-deps", "--target", str(target),
            "--python-platform", "aarch64-apple-darwin", "--python-version", "3.11",
            "-r", str(req),
        ]  # fmt: skip
        env.setdefault("MACOSX_DEPLOYMENT_TARGET", "14.0")  # mlx has wheels for macOS >= 14
        start = time.monotonic()
        subprocess.run(cmd, cwd=work, env=env, check=True)
        seconds = time.monotonic() - start
        return {
            "mode": f"macos-arm64 site-packages{suffix}",
            "seconds": round(seconds, 1),
            "mb": du_mb(target),
            "packages": count_packages(target),
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dev", action="store_true", help="include the dev dependency group")
    parser.add_argument("--cold", action="store_true", help="empty uv cache (downloads)")
    parser.add_argument("--platform", choices=["native", "macos-arm64"], default="native")
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.dev, args.cold, args.platform)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
