"""API keys: who a request is, and who may see what.

Keys come from ``--api-key`` (repeatable), ``MLX_EMB_API_KEYS`` (comma-separated) and
``--api-key-file`` (one key per line, an optional label after whitespace). A key is never
logged: the log and the access log name its label, or ``key-<sha256 prefix>``. Jobs belong to
the key that submitted them through :attr:`Principal.owner` (a hash of the key, so a label
change or a rotated file keeps the ownership exact).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.errors import Unauthorized
from app.settings import Settings

log = logging.getLogger(__name__)

ANONYMOUS_OWNER = ""  # jobs submitted while the server runs without keys


@dataclass(frozen=True)
class Principal:
    label: str
    owner: str


ANONYMOUS = Principal(label="-", owner=ANONYMOUS_OWNER)


def key_id(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:24]


def read_key_file(path: Path) -> list[tuple[str, str | None]]:
    """``(key, label)`` pairs of a key file (blank lines and ``#`` comments skipped)."""
    pairs: list[tuple[str, str | None]] = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, *label = line.split(None, 1)
        pairs.append((key, label[0].strip() if label else None))
    return pairs


class KeyRing:
    """The configured keys; :meth:`identify` compares a presented key with every one in
    constant time."""

    def __init__(
        self, keys: Iterable[tuple[str, str | None]] = (), metrics_key: str | None = None
    ) -> None:
        self._keys: list[tuple[bytes, Principal]] = []
        for key, label in keys:
            if not key:
                continue
            owner = key_id(key)
            self._keys.append((key.encode(), Principal(label or f"key-{owner[:8]}", owner)))
        self._metrics_key = metrics_key.encode() if metrics_key else None

    @classmethod
    def from_settings(cls, settings: Settings) -> KeyRing:
        pairs: list[tuple[str, str | None]] = [(k, None) for k in settings.api_keys]
        if settings.api_key_file is not None:
            pairs += read_key_file(settings.api_key_file)
        return cls(pairs, settings.metrics_key)

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    @property
    def labels(self) -> list[str]:
        return [p.label for _, p in self._keys]

    def identify(self, presented: str | None) -> Principal | None:
        if not presented:
            return None
        given = presented.encode()
        found = None
        for key, principal in self._keys:  # no early exit: the time does not depend on which
            if hmac.compare_digest(key, given) and found is None:
                found = principal
        return found

    def is_metrics_key(self, presented: str | None) -> bool:
        if not presented or self._metrics_key is None:
            return False
        return hmac.compare_digest(self._metrics_key, presented.encode())

    @property
    def metrics_guarded(self) -> bool:
        return self.enabled or self._metrics_key is not None


def owner_of(request: Any) -> str:
    """The owner id of a request the guard let in (``request.ctx.principal``)."""
    principal = getattr(request.ctx, "principal", None)
    return principal.owner if principal is not None else ANONYMOUS_OWNER


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key of ``Authorization: Bearer KEY`` or ``x-api-key: KEY``."""
    auth = headers.get("authorization") or ""
    scheme, _, value = auth.strip().partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return (headers.get("x-api-key") or "").strip() or None


def unauthorized(presented: str | None) -> Unauthorized:
    if presented is None:
        return Unauthorized(
            "missing API key: send it as 'Authorization: Bearer KEY' (or 'x-api-key: KEY')",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return Unauthorized("incorrect API key provided", headers={"WWW-Authenticate": "Bearer"})


class Guard:
    """Who a request is, by its route: ``/health`` and ``/metrics`` have their own rules."""

    def __init__(self, ring: KeyRing, *, public_health: bool) -> None:
        self.ring = ring
        self.public_health = public_health

    def check(self, path: str, headers: Mapping[str, str]) -> Principal:
        """The request's principal, or :class:`Unauthorized`."""
        path = path.rstrip("/") or "/"
        if path == "/health" and (self.public_health or not self.ring.enabled):
            return ANONYMOUS
        presented = presented_key(headers)
        if path == "/metrics":
            if not self.ring.metrics_guarded or self.ring.is_metrics_key(presented):
                return ANONYMOUS
        elif not self.ring.enabled:
            return ANONYMOUS
        principal = self.ring.identify(presented)
        if principal is None:
            raise unauthorized(presented)
        return principal


def is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(settings: Settings, ring: KeyRing) -> str | None:
    """Why the server must not start (an open server on a non-loopback address), or None."""
    if ring.enabled or is_loopback(settings.host):
        return None
    if settings.allow_unauthenticated:
        log.warning(
            "SERVING WITHOUT API KEYS ON %s (--allow-unauthenticated): anyone who can reach "
            "this address can embed, and read and cancel any job",
            settings.host,
        )
        return None
    return (
        f"refusing to serve on {settings.host} without an API key: anyone on the network could "
        "use it. Give --api-key KEY (or --api-key-file FILE, env MLX_EMB_API_KEYS), or "
        "--allow-unauthenticated to serve it open on purpose"
    )
