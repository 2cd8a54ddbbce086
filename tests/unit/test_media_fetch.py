"""Fetching media over http(s) and file:// against a real local server (tests/media_server.py).

The server listens on 127.0.0.1. Tests that simply fetch from it use ``allow_private_media``.
Tests of the SSRF guard use a resolver stub that maps a fake public name
(``media.example.com`` -> ``93.184.215.14``) and a transport that forwards connections for
that public IP to 127.0.0.1 while recording what the fetcher asked for - so they also prove the
fetcher connects to the address it checked, with the real name in ``Host`` / SNI.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from app.errors import ApiError, MediaError, MediaFetchRefused, PayloadTooLarge
from app.inputs import InputResolver, ResolvedItem
from app.media.fetch import MAX_REDIRECTS, host_allowed
from app.settings import Settings

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.media_server import MediaServer  # noqa: E402

PUBLIC_IP = "93.184.215.14"
FAKE_HOST = "media.example.com"


@pytest.fixture(scope="module")
def server() -> Iterator[MediaServer]:
    with MediaServer() as srv:
        yield srv


class StubResolver:
    """``async (host, port) -> [ip, ...]`` from a table; values may be callables (rebinding)."""

    def __init__(self, table: dict[str, list[str] | Callable[[], list[str]]]) -> None:
        self.table = table
        self.calls: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        if host not in self.table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        value = self.table[host]
        return list(value() if callable(value) else value)


class ConnectMap(httpx.AsyncBaseTransport):
    """Records each request the fetcher sends, and delivers those for ``PUBLIC_IP`` to
    127.0.0.1 (where the test server is)."""

    def __init__(self, https_body: bytes | None = None) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.seen: list[tuple[str, str, str | None]] = []
        self.https_body = https_body

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(
            (request.url.host, request.headers["host"], request.extensions.get("sni_hostname"))
        )
        if request.url.scheme == "https":
            assert self.https_body is not None
            return httpx.Response(200, content=self.https_body)
        if request.url.host == PUBLIC_IP:
            request.url = request.url.copy_with(host="127.0.0.1")
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def resolve(
    raw: object,
    *,
    resolver: StubResolver | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    **settings,
) -> list[ResolvedItem]:
    async def go() -> list[ResolvedItem]:
        r = InputResolver(Settings(model="t", **settings), resolver=resolver, transport=transport)
        try:
            return await r.resolve(raw)
        finally:
            await r.aclose()

    return asyncio.run(go())


def fails(raw: object, cls: type[ApiError], **kw) -> ApiError:
    with pytest.raises(ApiError) as err:
        resolve(raw, **kw)
    assert type(err.value) is cls, f"{type(err.value).__name__}: {err.value.message}"
    assert err.value.message.startswith(f"{err.value.param}: ")
    return err.value


def public_stub(server: MediaServer, **extra) -> tuple[StubResolver, ConnectMap]:
    return StubResolver({FAKE_HOST: [PUBLIC_IP], **extra}), ConnectMap()


# ---------------------------------------------------------------------------- happy paths


@pytest.mark.parametrize(
    ("name", "size"),
    [
        ("png.png", (64, 48)),
        ("jpeg.jpg", (64, 48)),
        ("webp.webp", (64, 48)),
        ("gif.gif", (20, 20)),
        ("bmp.bmp", (64, 48)),
        ("tiff.tiff", (64, 48)),
        ("exif-rotated.jpg", (48, 64)),
        ("rgba.png", (32, 16)),
        ("cmyk.jpg", (64, 48)),
        ("png16.png", (256, 4)),
    ],
)
def test_fetch_each_image_format(server: MediaServer, name: str, size: tuple[int, int]) -> None:
    (item,) = resolve(server.url(f"/img/{name}"), allow_private_media=True)
    assert item.param == "input" and item.page is None
    img = item.item
    assert img.image.mode == "RGB" and img.image.size == size
    assert img.meta["source"] == "url"
    assert (img.meta["width"], img.meta["height"]) == size
    inline = "data:image/png;base64," + base64.b64encode(server.images[name]).decode()
    (same,) = resolve(inline)
    assert same.item.content_hash == img.content_hash


def test_same_picture_from_two_urls_and_formats_has_one_hash(server: MediaServer) -> None:
    items = resolve(
        [
            server.url("/img/png.png"),
            server.url("/copy/png.png"),
            {"type": "image_url", "image_url": {"url": server.url("/img/bmp.bmp")}},
            {"type": "file", "file": {"url": server.url("/img/webp.webp")}},
        ],
        allow_private_media=True,
    )
    assert len({i.item.content_hash for i in items}) == 1
    assert [i.param for i in items] == [
        "input[0]",
        "input[1]",
        "input[2].image_url",
        "input[3].file",
    ]


def test_pdf_by_url_with_pages(server: MediaServer) -> None:
    part = {"type": "file", "file": {"url": server.url("/doc.pdf")}, "pages": "3,1"}
    items = resolve(["query", part], allow_private_media=True, pdf_dpi=72)
    assert [(i.input_index, i.page) for i in items] == [(0, None), (1, 3), (1, 1)]
    assert items[1].item.image.size == (250, 250) and items[2].item.image.size == (200, 300)
    assert items[1].item.meta["source"] == "url"


# ---------------------------------------------------------------------------- SSRF: addresses


def test_loopback_is_refused_by_default(server: MediaServer) -> None:
    before = len(server.requests)
    err = fails(server.url("/img/png.png"), MediaFetchRefused)
    assert err.status == 400 and err.param == "input"
    assert err.message == (
        "input: fetch refused: 127.0.0.1 is a loopback address "
        "(start the server with --allow-private-media to allow it)"
    )
    assert len(server.requests) == before  # never connected


def test_refusal_message_names_the_item() -> None:
    raw = ["a", "b", "c", "http://10.0.0.5/x.png"]
    err = fails(raw, MediaFetchRefused)
    assert err.param == "input[3]"
    assert err.message == (
        "input[3]: fetch refused: 10.0.0.5 is a private address "
        "(start the server with --allow-private-media to allow it)"
    )


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/x",
        "http://[::ffff:127.0.0.1]/x",
        "http://[::ffff:a9fe:a9fe]/x",
        "http://[64:ff9b::a00:5]/x",
        "http://[2002:7f00:1::]/x",
        "http://[fe80::1]/x",
        "http://[fd00::1]/x",
        "http://0.0.0.0/x",
        "http://100.64.0.1/x",
        "http://192.168.0.1/x",
        "http://172.16.5.4:8080/x",
        "https://10.1.2.3/x",
        "http://224.0.0.1/x",
        "http://255.255.255.255/x",
    ],
)
def test_literal_non_public_addresses_are_refused(url: str) -> None:
    err = fails([{"type": "image_url", "image_url": {"url": url}}], MediaFetchRefused)
    assert err.param == "input[0].image_url"
    assert "fetch refused: " in err.message


@pytest.mark.parametrize("host", ["2130706433", "0x7f000001", "127.1", "localhost"])
def test_obfuscated_loopback_names_are_refused(host: str) -> None:
    err = fails(f"http://{host}:9/x.png", MediaFetchRefused)  # the real getaddrinfo resolves them
    assert "loopback" in err.message


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.0.0.5",
        "172.20.0.1",
        "192.168.1.10",
        "100.64.0.1",
        "169.254.169.254",
        "0.0.0.0",
        "::1",
        "fd00::1",
        "fe80::1",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
        "64:ff9b::7f00:1",
        "2002:a00:5::1",
        "198.51.100.1",
        "ff02::1",
    ],
)
def test_names_resolving_to_non_public_addresses_are_refused(address: str) -> None:
    stub = StubResolver({"evil.example": [address]})
    transport = ConnectMap()
    err = fails("http://evil.example/x.png", MediaFetchRefused, resolver=stub, transport=transport)
    shown = str(ipaddress.ip_address(address))  # ::ffff:127.0.0.1 prints as ::ffff:7f00:1
    assert err.message.startswith(f"input: fetch refused: evil.example resolves to {shown}, ")
    assert transport.seen == []


def test_a_name_with_one_public_and_one_private_address_is_refused() -> None:
    stub = StubResolver({"mixed.example": [PUBLIC_IP, "10.0.0.5"]})
    transport = ConnectMap()
    err = fails("http://mixed.example/x.png", MediaFetchRefused, resolver=stub, transport=transport)
    assert "mixed.example resolves to 10.0.0.5, a private address" in err.message
    assert transport.seen == []


def test_fetch_connects_to_the_checked_address_with_the_real_host(server: MediaServer) -> None:
    stub, transport = public_stub(server)
    url = server.url("/img/png.png", host=FAKE_HOST)
    (item,) = resolve(url, resolver=stub, transport=transport)
    assert item.item.image.size == (64, 48)
    assert stub.calls == [FAKE_HOST]
    assert transport.seen == [(PUBLIC_IP, f"{FAKE_HOST}:{server.port}", None)]
    assert server.requests[-1] == ("/img/png.png", f"{FAKE_HOST}:{server.port}")


def test_dns_rebinding_cannot_switch_the_address(server: MediaServer) -> None:
    answers = iter([[PUBLIC_IP], ["127.0.0.1"], ["127.0.0.1"]])
    stub = StubResolver({FAKE_HOST: lambda: next(answers)})
    transport = ConnectMap()
    resolve(server.url("/img/png.png", host=FAKE_HOST), resolver=stub, transport=transport)
    assert stub.calls == [FAKE_HOST]  # resolved once ...
    assert [seen[0] for seen in transport.seen] == [PUBLIC_IP]  # ... and that address is used


def test_https_sends_sni_and_host_for_the_real_name() -> None:
    png = MediaServer().images["png.png"]
    stub = StubResolver({FAKE_HOST: [PUBLIC_IP]})
    transport = ConnectMap(https_body=png)
    resolve(f"https://{FAKE_HOST}/a.png", resolver=stub, transport=transport)
    assert transport.seen == [(PUBLIC_IP, FAKE_HOST, FAKE_HOST)]


def test_unresolvable_host_is_a_media_error() -> None:
    err = fails("http://nowhere.example/x.png", MediaError, resolver=StubResolver({}))
    assert "cannot resolve host nowhere.example" in err.message


# ---------------------------------------------------------------------------- redirects


def test_redirect_chain_is_followed_up_to_the_limit(server: MediaServer) -> None:
    assert MAX_REDIRECTS == 3
    (item,) = resolve(server.url("/redirect/3"), allow_private_media=True)
    assert item.item.image.size == (64, 48)
    err = fails(server.url("/redirect/4"), MediaError, allow_private_media=True)
    assert "more than 3 redirects" in err.message


def test_redirect_into_loopback_is_refused(server: MediaServer) -> None:
    stub, transport = public_stub(server)
    err = fails(
        server.url("/redirect-to-loopback", host=FAKE_HOST),
        MediaFetchRefused,
        resolver=stub,
        transport=transport,
    )
    assert err.message == (
        "input: fetch refused: 127.0.0.1 is a loopback address "
        "(start the server with --allow-private-media to allow it)"
    )
    assert [seen[0] for seen in transport.seen] == [PUBLIC_IP]  # only the first hop went out


def test_every_redirect_hop_is_resolved_and_checked(server: MediaServer) -> None:
    stub, transport = public_stub(server, **{"internal.example": ["10.9.8.7"]})
    target = quote("http://internal.example/secret.png", safe="")
    err = fails(
        server.url(f"/redirect-to/{target}", host=FAKE_HOST),
        MediaFetchRefused,
        resolver=stub,
        transport=transport,
    )
    assert "internal.example resolves to 10.9.8.7, a private address" in err.message
    assert stub.calls == [FAKE_HOST, "internal.example"]


@pytest.mark.parametrize("target", ["file:///etc/passwd", "ftp://example.com/x.png"])
def test_redirect_to_other_schemes_is_refused(server: MediaServer, target: str) -> None:
    err = fails(
        server.url(f"/redirect-to/{quote(target, safe='')}"),
        MediaFetchRefused,
        allow_private_media=True,
    )
    assert "only http and https are followed" in err.message


# ---------------------------------------------------------------------------- allow-list


def test_host_allowed_patterns() -> None:
    patterns = ("images.example.org", "*.cdn.example.com", "203.0.113.5")
    assert host_allowed("images.example.org", patterns)
    assert host_allowed("IMAGES.example.org.", patterns)
    assert host_allowed("a.cdn.example.com", patterns)
    assert host_allowed("a.b.cdn.example.com", patterns)
    assert not host_allowed("cdn.example.com", patterns)
    assert not host_allowed("evilcdn.example.com", patterns)
    assert not host_allowed("images.example.org.evil.com", patterns)
    assert host_allowed("203.0.113.5", patterns)
    assert not host_allowed("anything.example", ())


def test_allowed_media_domains(server: MediaServer) -> None:
    stub, transport = public_stub(server, **{"other.example": [PUBLIC_IP]})
    kw = {"resolver": stub, "transport": transport, "allowed_media_domains": ("*.example.com",)}
    (item,) = resolve(server.url("/img/png.png", host=FAKE_HOST), **kw)
    assert item.item.image.size == (64, 48)
    err = fails(server.url("/img/png.png", host="other.example"), MediaFetchRefused, **kw)
    assert err.message == (
        "input: fetch refused: host other.example is not on the server's "
        "--allowed-media-domains list"
    )
    # a redirect off the list is refused too
    target = quote(server.url("/img/png.png", host="other.example"), safe="")
    err = fails(server.url(f"/redirect-to/{target}", host=FAKE_HOST), MediaFetchRefused, **kw)
    assert "host other.example is not on" in err.message


def test_allow_list_does_not_bypass_the_address_check() -> None:
    stub = StubResolver({"intranet.example.com": ["10.0.0.1"]})
    err = fails(
        "http://intranet.example.com/x.png",
        MediaFetchRefused,
        resolver=stub,
        allowed_media_domains=("*.example.com",),
    )
    assert "10.0.0.1, a private address" in err.message


# ---------------------------------------------------------------------------- limits & failures


@pytest.mark.slow
def test_slow_drip_hits_the_total_timeout(server: MediaServer) -> None:
    start = time.monotonic()
    err = fails(server.url("/slow"), MediaError, allow_private_media=True, media_timeout=1.0)
    assert time.monotonic() - start < 3.0
    assert "took longer than 1s (the server's --media-timeout)" in err.message


def test_byte_cap_is_enforced_while_streaming(server: MediaServer) -> None:
    err = fails(
        server.url("/chunked/5000000"),
        MediaError,
        allow_private_media=True,
        media_max_bytes=1 << 20,
    )
    assert "is larger than 1048576 bytes (the body kept coming" in err.message
    assert "--media-max-bytes" in err.message
    err = fails(
        server.url("/declared-huge"), MediaError, allow_private_media=True, media_max_bytes=1 << 20
    )
    assert "it declares 10737418240 bytes" in err.message
    # exactly at the cap the body arrives whole (and then fails as the junk PNG it is)
    err = fails(
        server.url("/chunked/70000"), MediaError, allow_private_media=True, media_max_bytes=70000
    )
    assert "larger than" not in err.message and "PNG" in err.message


@pytest.mark.parametrize("status", [404, 403, 500])
def test_non_2xx_is_a_media_error_with_the_status(server: MediaServer, status: int) -> None:
    err = fails(server.url(f"/status/{status}"), MediaError, allow_private_media=True)
    assert f"failed: HTTP {status}" in err.message


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize(
    ("path", "fragment"),
    [
        ("/html-as-png", "not a supported image or PDF"),
        ("/html-as-png", "looks like an HTML page"),
        ("/bomb.png", "--max-image-pixels"),
        ("/big-header.png", "10000x10000 = 100000000 pixels"),
        ("/truncated.jpg", "the JPEG file is truncated"),
        ("/encrypted.pdf", "password-protected"),
        ("/corrupt.pdf", "the PDF is corrupt"),
    ],
)
def test_bad_media_by_url(server: MediaServer, path: str, fragment: str) -> None:
    err = fails(["fine", server.url(path)], MediaError, allow_private_media=True)
    assert err.param == "input[1]"
    assert fragment in err.message


def test_connection_refused_is_a_media_error() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    err = fails(f"http://127.0.0.1:{port}/x.png", MediaError, allow_private_media=True)
    assert "could not connect to 127.0.0.1" in err.message


def test_client_timeouts_come_from_settings() -> None:
    async def go() -> httpx.Timeout:
        r = InputResolver(Settings(model="t", media_connect_timeout=2.5, media_timeout=9.0))
        try:
            return r._fetcher._client.timeout
        finally:
            await r.aclose()

    timeout = asyncio.run(go())
    assert timeout.connect == 2.5 and timeout.read == 9.0


@pytest.mark.parametrize(
    "url", ["ftp://example.com/x.png", "gopher://example.com/", "javascript:alert(1)"]
)
def test_other_schemes_are_refused(url: str) -> None:
    err = fails([{"type": "image_url", "image_url": {"url": url}}], MediaFetchRefused)
    assert err.param == "input[0].image_url"
    assert "only http, https" in err.message


def test_invalid_plain_string_url_explains_the_text_rule() -> None:
    err = fails(["http://this is a sentence, not a URL"], MediaError)
    assert err.param == "input[0]"
    assert "invalid media URL" in err.message
    assert '{"type": "text"' in err.message


# ---------------------------------------------------------------------------- concurrency


def test_media_items_are_fetched_concurrently_but_bounded() -> None:
    png = MediaServer().images["png.png"]
    active = 0
    peak = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.05)
        active -= 1
        return httpx.Response(200, content=png)

    stub = StubResolver({FAKE_HOST: [PUBLIC_IP]})
    urls = [f"http://{FAKE_HOST}/{n}.png" for n in range(20)]
    start = time.monotonic()
    items = resolve(urls, resolver=stub, transport=httpx.MockTransport(handler))
    assert len(items) == 20 and [i.input_index for i in items] == list(range(20))
    assert 1 < peak <= 8
    assert time.monotonic() - start < 20 * 0.05


def test_one_bad_item_fails_the_whole_request(server: MediaServer) -> None:
    good = server.url("/img/png.png")
    err = fails([good, good, server.url("/status/404"), good], MediaError, allow_private_media=True)
    assert err.param == "input[2]"


# ---------------------------------------------------------------------------- file://


def image_part(url: str) -> list[dict]:
    return [{"type": "image_url", "image_url": {"url": url}}]


@pytest.fixture()
def media_dir(tmp_path: Path, server: MediaServer) -> Path:
    root = tmp_path / "media"
    root.mkdir()
    (root / "sub").mkdir()
    (root / "sub" / "pic.png").write_bytes(server.images["png.png"])
    (root / "doc.pdf").write_bytes(server.pdf)
    (tmp_path / "secret.png").write_bytes(server.images["png.png"])
    (root / "escape.png").symlink_to(tmp_path / "secret.png")
    (root / "inside-link.png").symlink_to(root / "sub" / "pic.png")
    return root


def test_file_urls_are_off_by_default(media_dir: Path) -> None:
    err = fails(image_part((media_dir / "sub/pic.png").as_uri()), MediaFetchRefused)
    assert err.message == (
        "input[0].image_url: fetch refused: file:// URLs are off (start the server with "
        "--allowed-local-media-path DIR to read files under DIR)"
    )


def test_file_urls_under_the_allowed_directory(media_dir: Path) -> None:
    kw = {"allowed_local_media_path": media_dir}
    (pic,) = resolve(
        {"type": "image_url", "image_url": {"url": (media_dir / "sub/pic.png").as_uri()}}, **kw
    )
    assert pic.item.meta["source"] == "file" and pic.item.image.size == (64, 48)
    (linked,) = resolve(image_part((media_dir / "inside-link.png").as_uri()), **kw)
    assert linked.item.content_hash == pic.item.content_hash
    pages = resolve(
        {"type": "file", "file": {"url": (media_dir / "doc.pdf").as_uri()}}, pdf_dpi=36, **kw
    )
    assert [p.page for p in pages] == [1, 2, 3]


@pytest.mark.parametrize(
    ("make_url", "cls", "fragment"),
    [
        (lambda d: (d / "escape.png").as_uri(), MediaFetchRefused, "is outside the directory"),
        (lambda d: (d.parent / "secret.png").as_uri(), MediaFetchRefused, "is outside"),
        (lambda d: f"file://{d}/sub/../../secret.png", MediaFetchRefused, "'..' is not allowed"),
        (lambda d: f"file://{d}/sub/%2e%2e/%2e%2e/secret.png", MediaFetchRefused, "'..'"),
        (lambda d: f"file://otherhost{d}/sub/pic.png", MediaFetchRefused, "not host"),
        (lambda d: (d / "missing.png").as_uri(), MediaError, "does not exist"),
        (lambda d: (d / "sub").as_uri(), MediaError, "not a regular file"),
    ],
)
def test_file_url_refusals(
    media_dir: Path, make_url: Callable[[Path], str], cls: type[ApiError], fragment: str
) -> None:
    err = fails(image_part(make_url(media_dir)), cls, allowed_local_media_path=media_dir)
    assert fragment in err.message


def test_file_url_size_cap(media_dir: Path) -> None:
    err = fails(
        [{"type": "file", "file": {"url": (media_dir / "doc.pdf").as_uri()}}],
        MediaError,
        allowed_local_media_path=media_dir,
        media_max_bytes=100,
    )
    assert "larger than 100 bytes" in err.message


def test_inline_media_over_the_cap_is_413() -> None:
    uri = "data:image/png;base64," + base64.b64encode(b"\x89PNG" + b"\x00" * 5000).decode()
    err = fails(["x", uri], PayloadTooLarge, media_max_bytes=1000)
    assert err.status == 413 and err.param == "input[1]"
