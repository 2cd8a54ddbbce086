"""The guarded media fetcher: http(s) with SSRF checks, and ``file://`` under one directory.

For http(s) every hop (the first URL and each redirect, at most MAX_REDIRECTS) is checked:

1. scheme http/https only; host on ``--allowed-media-domains`` when that list is set;
2. the host is resolved ONCE (an injectable ``async resolve(host, port) -> list[str]``) and
   EVERY address must pass :func:`app.media.addresses.check_address`;
3. the request goes to the checked IP itself (URL rewritten to the IP, ``Host`` header and TLS
   SNI / certificate check for the real name), so a second DNS answer (rebinding) is never used.

Connections are not kept alive (a pooled TLS connection verified for one name must not serve
another name on the same IP), proxies from the environment are ignored, the body is read with
``Accept-Encoding: identity`` and capped at ``--media-max-bytes`` while streaming, and the whole
fetch (DNS, connect, redirects, a slow drip) is bounded by ``--media-timeout``.
"""

from __future__ import annotations

import asyncio
import os
import socket
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import unquote, urlsplit

import httpx

from app.errors import MediaError, MediaFetchRefused
from app.media.addresses import check_address, parse_ip
from app.settings import Settings

Resolver = Callable[[str, int], Awaitable[list[str]]]

MAX_REDIRECTS = 3
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
USER_AGENT = "mlx-embeddings-server (media fetch)"
_MAX_URL_IN_MESSAGE = 120


async def default_resolve(host: str, port: int) -> list[str]:
    """All addresses of ``host`` from the event loop's (threaded) getaddrinfo."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: dict[str, None] = {}
    for _family, _type, _proto, _canon, sockaddr in infos:
        seen.setdefault(str(sockaddr[0]).split("%", 1)[0], None)
    return list(seen)


def host_allowed(host: str, patterns: tuple[str, ...]) -> bool:
    """``host`` matches an allow-list entry: an exact host, or ``*.suffix`` for its subdomains."""
    host = host.rstrip(".").lower()
    for pattern in patterns:
        pattern = pattern.strip().rstrip(".").lower()
        if not pattern:
            continue
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]) and len(host) > len(pattern) - 1:
                return True
        elif host == pattern or (
            parse_ip(pattern) is not None and parse_ip(pattern) == parse_ip(host)
        ):
            return True
    return False


def _short(url: object) -> str:
    text = str(url)
    return text if len(text) <= _MAX_URL_IN_MESSAGE else text[: _MAX_URL_IN_MESSAGE - 3] + "..."


class MediaFetcher:
    """Fetches media bytes. One per InputResolver; holds one shared httpx.AsyncClient."""

    def __init__(
        self,
        settings: Settings,
        *,
        resolver: Resolver | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.settings = settings
        self._resolve = resolver or default_resolve
        total = settings.media_timeout
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(total, connect=settings.media_connect_timeout),
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=0),
            follow_redirects=False,
            trust_env=False,
            transport=transport,
            headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"},
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def fetch(self, url: str, param: str, *, hint: bool = False) -> tuple[bytes, str]:
        """The bytes at ``url`` and their origin ("url" or "file"). Raises MediaError kinds."""
        scheme = url.split(":", 1)[0].lower() if ":" in url else ""
        if scheme == "file":
            return await self._read_file(url, param), "file"
        if scheme not in ("http", "https"):
            raise MediaFetchRefused(
                f"{param}: fetch refused: only http, https (and, when enabled, file) URLs are "
                f"fetched, not {scheme or 'a URL without scheme'!r}",
                param,
            )
        timeout = self.settings.media_timeout
        try:
            async with asyncio.timeout(timeout):
                return await self._fetch_http(url, param, hint=hint), "url"
        except TimeoutError:
            raise MediaError(
                f"{param}: fetching {_short(url)} took longer than {timeout:g}s "
                "(the server's --media-timeout)",
                param,
            ) from None

    # ------------------------------------------------------------------ http(s)

    async def _fetch_http(self, raw_url: str, param: str, *, hint: bool) -> bytes:
        url = self._parse_url(raw_url, param, hint=hint)
        for hop in range(MAX_REDIRECTS + 1):
            if url.scheme not in ("http", "https"):
                raise MediaFetchRefused(
                    f"{param}: fetch refused: a redirect leads to a {url.scheme!r} URL; only "
                    "http and https are followed",
                    param,
                )
            host = self._host_of(url, param, hint=hint)
            self._check_allow_list(host, param)
            port = url.port or (443 if url.scheme == "https" else 80)
            addresses = await self._checked_addresses(host, port, param)
            location = await self._get(url, host, port, addresses, param)
            if isinstance(location, bytes):
                return location
            if hop == MAX_REDIRECTS:
                break
            try:
                url = url.join(location)
            except (httpx.InvalidURL, ValueError):
                raise MediaError(
                    f"{param}: {_short(url)} redirects to an invalid URL {_short(location)!r}",
                    param,
                ) from None
        raise MediaError(
            f"{param}: more than {MAX_REDIRECTS} redirects starting at {_short(raw_url)}; "
            "give the final URL of the file",
            param,
        )

    @staticmethod
    def _parse_url(raw_url: str, param: str, *, hint: bool) -> httpx.URL:
        problem = None
        if any(c.isspace() for c in raw_url):
            problem = "it contains whitespace"
        else:
            try:
                url = httpx.URL(raw_url)
            except (httpx.InvalidURL, ValueError) as exc:
                problem = str(exc)
        if problem is not None:
            text = f"{param}: invalid media URL ({problem})"
            if hint:
                text += (
                    "; strings starting with http:// or https:// are fetched as media - to embed "
                    'such text send {"type": "text", "text": ...}'
                )
            raise MediaError(text, param)
        return url

    @staticmethod
    def _host_of(url: httpx.URL, param: str, *, hint: bool) -> str:
        try:
            host = url.raw_host.decode("ascii")
        except UnicodeDecodeError:
            host = ""
        if not host or "%" in host or "@" in host:
            raise MediaError(f"{param}: invalid media URL {_short(url)!r} (no usable host)", param)
        return host.lower()

    def _check_allow_list(self, host: str, param: str) -> None:
        allowed = self.settings.allowed_media_domains
        if allowed and not host_allowed(host, allowed):
            raise MediaFetchRefused(
                f"{param}: fetch refused: host {host} is not on the server's "
                f"--allowed-media-domains list",
                param,
            )

    async def _checked_addresses(self, host: str, port: int, param: str) -> list[str]:
        literal = parse_ip(host)
        if literal is not None:
            addresses = [str(literal)]
        else:
            try:
                addresses = list(await self._resolve(host.rstrip("."), port))
            except (OSError, UnicodeError) as exc:
                raise MediaError(f"{param}: cannot resolve host {host} ({exc})", param) from None
            if not addresses:
                raise MediaError(f"{param}: host {host} has no addresses", param)
        allow_private = self.settings.allow_private_media
        for address in addresses:
            refusal = check_address(address, allow_private=allow_private)
            if refusal is not None:
                via = None if literal is not None else host
                raise MediaFetchRefused(f"{param}: fetch refused: {refusal.message(via)}", param)
        return [str(parse_ip(a)) for a in addresses]

    async def _get(
        self, url: httpx.URL, host: str, port: int, addresses: list[str], param: str
    ) -> bytes | str:
        """GET ``url`` from the first reachable checked address: the body, or a redirect target."""
        default_port = 443 if url.scheme == "https" else 80
        host_header = host if port == default_port else f"{host}:{port}"
        if ":" in host and parse_ip(host) is not None:  # IPv6 literal
            host_header = f"[{host}]" if port == default_port else f"[{host}]:{port}"
        extensions = {}
        if url.scheme == "https" and parse_ip(host) is None:
            extensions["sni_hostname"] = host.rstrip(".")
        last_error: Exception | None = None
        for address in addresses:
            target = url.copy_with(host=address)
            request = self._client.build_request(
                "GET", target, headers={"Host": host_header}, extensions=extensions
            )
            try:
                response = await self._client.send(request, stream=True)
            except httpx.ConnectTimeout as exc:
                last_error = exc
                continue
            except (httpx.ConnectError, OSError) as exc:
                last_error = exc
                continue
            except httpx.TimeoutException:
                raise MediaError(
                    f"{param}: {_short(url)} did not answer in time (--media-timeout)", param
                ) from None
            except httpx.HTTPError as exc:
                raise MediaError(f"{param}: fetching {_short(url)} failed ({exc})", param) from None
            try:
                return await self._handle(response, url, param)
            finally:
                await response.aclose()
        if isinstance(last_error, httpx.ConnectTimeout):
            raise MediaError(
                f"{param}: could not connect to {host} within "
                f"{self.settings.media_connect_timeout:g}s (--media-connect-timeout)",
                param,
            )
        raise MediaError(f"{param}: could not connect to {host} ({last_error})", param)

    async def _handle(self, response: httpx.Response, url: httpx.URL, param: str) -> bytes | str:
        status = response.status_code
        if status in REDIRECT_STATUSES:
            location = response.headers.get("location")
            if not location:
                raise MediaError(
                    f"{param}: {_short(url)} answered HTTP {status} without a Location", param
                )
            return location
        if not 200 <= status < 300:
            raise MediaError(
                f"{param}: fetching {_short(url)} failed: HTTP {status} "
                f"{response.reason_phrase}".rstrip(),
                param,
            )
        return await self._read_capped(response, url, param)

    async def _read_capped(self, response: httpx.Response, url: httpx.URL, param: str) -> bytes:
        max_bytes = self.settings.media_max_bytes
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_bytes:
            raise self._too_large(url, param, f"it declares {declared} bytes")
        buf = bytearray()
        try:
            async for chunk in response.aiter_bytes():
                buf += chunk
                if len(buf) > max_bytes:
                    raise self._too_large(url, param, "the body kept coming")
        except httpx.TimeoutException:
            raise MediaError(
                f"{param}: {_short(url)} stalled while sending the body (--media-timeout)", param
            ) from None
        except httpx.HTTPError as exc:
            raise MediaError(
                f"{param}: the download of {_short(url)} broke off ({exc})", param
            ) from None
        return bytes(buf)

    def _too_large(self, url: httpx.URL, param: str, why: str) -> MediaError:
        return MediaError(
            f"{param}: {_short(url)} is larger than {self.settings.media_max_bytes} bytes "
            f"({why}; the server's --media-max-bytes limit)",
            param,
        )

    # ------------------------------------------------------------------ file://

    async def _read_file(self, url: str, param: str) -> bytes:
        base = self.settings.allowed_local_media_path
        if base is None:
            raise MediaFetchRefused(
                f"{param}: fetch refused: file:// URLs are off (start the server with "
                "--allowed-local-media-path DIR to read files under DIR)",
                param,
            )
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost"):
            raise MediaFetchRefused(
                f"{param}: fetch refused: file:// URLs must name a local path "
                f"(file:///path), not host {parts.netloc!r}",
                param,
            )
        path = Path(unquote(parts.path))
        if not path.is_absolute():
            raise MediaError(f"{param}: a file:// URL needs an absolute path", param)
        if ".." in path.parts:
            raise MediaFetchRefused(
                f"{param}: fetch refused: '..' is not allowed in file:// paths", param
            )
        return await asyncio.to_thread(self._read_local, Path(base), path, param)

    def _read_local(self, base: Path, path: Path, param: str) -> bytes:
        root = base.expanduser().resolve()
        try:
            real = path.resolve(strict=True)
        except (FileNotFoundError, NotADirectoryError):
            raise MediaError(f"{param}: file {path} does not exist", param) from None
        except OSError as exc:
            raise MediaError(f"{param}: cannot read {path} ({exc.strerror})", param) from None
        if not real.is_relative_to(root):
            raise MediaFetchRefused(
                f"{param}: fetch refused: {path} is outside the directory allowed by "
                "--allowed-local-media-path",
                param,
            )
        max_bytes = self.settings.media_max_bytes
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        try:
            fd = os.open(real, flags)  # O_NONBLOCK: a FIFO must not hang the thread
        except OSError as exc:
            raise MediaError(f"{param}: cannot read {path} ({exc.strerror})", param) from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise MediaError(f"{param}: {path} is not a regular file", param)
            if st.st_size > max_bytes:
                raise MediaError(
                    f"{param}: {path} is larger than {max_bytes} bytes "
                    "(the server's --media-max-bytes limit)",
                    param,
                )
            f = os.fdopen(fd, "rb")
        except BaseException:
            os.close(fd)
            raise
        with f:
            data = f.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise MediaError(
                f"{param}: {path} is larger than {max_bytes} bytes (--media-max-bytes)", param
            )
        return data
