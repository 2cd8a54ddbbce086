"""A local threaded HTTP server on 127.0.0.1 (random port) serving real media for tests.

Everything is generated in memory at start-up (no binary fixtures). Routes:

    /img/<name>               the images of ``make_images()`` (labelled application/octet-stream)
    /copy/<name>              the same bytes under another URL
    /doc.pdf                  a 3-page PDF (pages of different sizes)
    /encrypted.pdf            a PDF that needs a user password
    /corrupt.pdf              "%PDF-" followed by junk
    /slow                     a PNG header, then one byte every 50 ms, forever
    /redirect/<n>             n redirects in all, ending at /img/png.png
    /redirect-to-loopback     302 to http://127.0.0.1:<port>/img/png.png
    /redirect-to/<url>        302 to the percent-decoded <url>
    /chunked/<n>              n bytes (PNG signature first), chunked, no Content-Length
    /declared-huge            Content-Length: 10 GB (body never sent)
    /bomb.png                 a PNG declaring 100000 x 100000 pixels, under 200 bytes
    /big-header.png           a PNG declaring 10000 x 10000 pixels (between Pillow's limits)
    /truncated.jpg            the first half of a JPEG
    /html-as-png              an HTML page labelled image/png
    /status/<code>            an empty answer with that status

Each request's (path, Host header) is appended to ``server.requests``.
"""

from __future__ import annotations

import hashlib
import io
import struct
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

from PIL import Image, ImageDraw

# ---------------------------------------------------------------------------- media makers


def _picture(size: tuple[int, int] = (64, 48), mode: str = "RGB") -> Image.Image:
    """A non-uniform picture (so orientation and colour mistakes show)."""
    img = Image.new("RGB", size, (240, 240, 240))
    draw = ImageDraw.Draw(img)
    w, h = size
    draw.rectangle([0, 0, w // 2, h // 2], fill=(220, 30, 30))
    draw.rectangle([w // 2, h // 2, w - 1, h - 1], fill=(30, 30, 220))
    draw.line([0, h - 1, w - 1, 0], fill=(20, 160, 20), width=3)
    return img if mode == "RGB" else img.convert(mode)


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def exif_rotated_jpeg() -> bytes:
    """A 64x48 JPEG whose EXIF says 'rotate 90 CW' (orientation 6): shown as 48x64."""
    img = _picture()
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(img, "JPEG", quality=95, exif=exif.tobytes())


def rgba_png() -> bytes:
    img = Image.new("RGBA", (32, 16), (255, 0, 0, 0))  # left half fully transparent
    ImageDraw.Draw(img).rectangle([16, 0, 31, 15], fill=(0, 0, 255, 255))
    return encode(img, "PNG")


def cmyk_jpeg() -> bytes:
    return encode(_picture().convert("CMYK"), "JPEG", quality=95)


def png16() -> bytes:
    """A 16-bit greyscale PNG: a horizontal ramp 0 .. 65535."""
    img = Image.new("I;16", (256, 4))
    img.putdata([x * 257 for _ in range(4) for x in range(256)])
    return encode(img, "PNG")


def animated_gif() -> bytes:
    red = Image.new("RGB", (20, 20), (255, 0, 0))
    blue = Image.new("RGB", (20, 20), (0, 0, 255))
    return encode(red, "GIF", save_all=True, append_images=[blue], duration=100, loop=0)


def palette_png_transparent() -> bytes:
    img = Image.new("P", (8, 8), 0)
    img.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    ImageDraw.Draw(img).rectangle([4, 0, 7, 7], fill=1)
    return encode(img, "PNG", transparency=0)


def make_images() -> dict[str, bytes]:
    pic = _picture()
    return {
        "png.png": encode(pic, "PNG"),
        "jpeg.jpg": encode(pic, "JPEG", quality=95),
        "webp.webp": encode(pic, "WEBP", lossless=True),
        "gif.gif": animated_gif(),
        "bmp.bmp": encode(pic, "BMP"),
        "tiff.tiff": encode(pic, "TIFF"),
        "exif-rotated.jpg": exif_rotated_jpeg(),
        "rgba.png": rgba_png(),
        "cmyk.jpg": cmyk_jpeg(),
        "png16.png": png16(),
        "palette-transparent.png": palette_png_transparent(),
    }


def make_pdf(
    page_sizes: tuple[tuple[int, int], ...] = ((200, 300), (300, 200), (250, 250)),
) -> bytes:
    """A PDF with one page per size (points), each page a different picture."""
    pages = []
    for n, size in enumerate(page_sizes, start=1):
        img = _picture(size)
        ImageDraw.Draw(img).text((10, 10), f"page {n}", fill=(0, 0, 0))
        pages.append(img)
    buf = io.BytesIO()
    pages[0].save(buf, "PDF", save_all=True, append_images=pages[1:], resolution=72.0)
    return buf.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG that declares ``width`` x ``height`` (a decompression bomb's shape)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


def _rc4(key: bytes, data: bytes) -> bytes:
    s = list(range(256))
    j = 0
    for i in range(256):
        j = (j + s[i] + key[i % len(key)]) % 256
        s[i], s[j] = s[j], s[i]
    out = bytearray()
    i = j = 0
    for byte in data:
        i = (i + 1) % 256
        j = (j + s[i]) % 256
        s[i], s[j] = s[j], s[i]
        out.append(byte ^ s[(s[i] + s[j]) % 256])
    return bytes(out)


_PDF_PAD = bytes.fromhex("28BF4E5E4E758A4164004E56FFFA01082E2E00B6D0683E802F0CA9FE6453697A")


def encrypted_pdf(user_password: bytes = b"secret", owner_password: bytes = b"owner") -> bytes:
    """A one-page PDF encrypted with the standard security handler (RC4-40, R2)."""

    def pad(pw: bytes) -> bytes:
        return (pw + _PDF_PAD)[:32]

    file_id = hashlib.md5(b"mlx-embeddings-server test").digest()
    p_value = -4
    o_entry = _rc4(hashlib.md5(pad(owner_password)).digest()[:5], pad(user_password))
    key = hashlib.md5(pad(user_password) + o_entry + struct.pack("<i", p_value) + file_id).digest()
    u_entry = _rc4(key[:5], _PDF_PAD)
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] >>",
        b"<< /Filter /Standard /V 1 /R 2 /O <"
        + o_entry.hex().encode()
        + b"> /U <"
        + u_entry.hex().encode()
        + b"> /P "
        + str(p_value).encode()
        + b" >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for n, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{n} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    for off in offsets:
        out += f"{off:010d} 00000 n \n".encode()
    hex_id = file_id.hex().encode()
    out += (
        b"trailer\n<< /Size "
        + str(len(objects) + 1).encode()
        + b" /Root 1 0 R /Encrypt 4 0 R /ID [<"
        + hex_id
        + b"><"
        + hex_id
        + b">] >>\nstartxref\n"
        + str(xref).encode()
        + b"\n%%EOF\n"
    )
    return bytes(out)


HTML_PAGE = b"<!DOCTYPE html><html><head><title>Not an image</title></head><body>hi</body></html>"


# ---------------------------------------------------------------------------- server


class MediaServer:
    """Start with ``with MediaServer() as server:``; ``server.url("/img/png.png")``."""

    def __init__(self) -> None:
        self.images = make_images()
        self.pdf = make_pdf()
        self.files: dict[str, tuple[bytes, str]] = {
            "/doc.pdf": (self.pdf, "application/pdf"),
            "/encrypted.pdf": (encrypted_pdf(), "application/pdf"),
            "/corrupt.pdf": (b"%PDF-1.7\n" + b"\x00garbage" * 64, "application/pdf"),
            "/bomb.png": (png_header_only(100_000, 100_000), "image/png"),
            "/big-header.png": (png_header_only(10_000, 10_000), "image/png"),
            "/truncated.jpg": (
                self.images["jpeg.jpg"][: len(self.images["jpeg.jpg"]) // 2],
                "image/jpeg",
            ),
            "/html-as-png": (HTML_PAGE, "image/png"),
        }
        for name, data in self.images.items():
            self.files[f"/img/{name}"] = (data, "application/octet-stream")
            self.files[f"/copy/{name}"] = (data, "image/whatever")
        self.requests: list[tuple[str, str]] = []
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        assert self._httpd is not None
        return self._httpd.server_address[1]

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def start(self) -> MediaServer:
        server = self

        class Handler(_Handler):
            media = server

        self._httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> MediaServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # clients hanging up mid-answer is what several tests do on purpose


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    media: MediaServer

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet tests
        pass

    def _send(self, status: int, body: bytes = b"", ctype: str = "text/plain", **headers) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        path = self.path.split("?", 1)[0]
        self.media.requests.append((path, self.headers.get("Host", "")))
        try:
            self._route(path)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _route(self, path: str) -> None:
        media = self.media
        if path in media.files:
            body, ctype = media.files[path]
            self._send(200, body, ctype)
        elif path == "/slow":
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(b"\x89PNG\r\n\x1a\n")
            self.wfile.flush()
            for _ in range(2000):
                time.sleep(0.05)
                self.wfile.write(b"\x00")
                self.wfile.flush()
        elif path.startswith("/redirect/"):
            n = int(path.rsplit("/", 1)[1])
            if n == 0:
                self._send(200, media.images["png.png"], "image/png")
            else:
                target = f"/redirect/{n - 1}" if n > 1 else "/img/png.png"
                self._send(302, b"", Location=target)
        elif path == "/redirect-to-loopback":
            self._send(302, b"", Location=f"http://127.0.0.1:{media.port}/img/png.png")
        elif path.startswith("/redirect-to/"):
            self._send(302, b"", Location=unquote(path[len("/redirect-to/") :]))
        elif path.startswith("/chunked/"):
            total = int(path.rsplit("/", 1)[1])
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            sent = 0
            piece = b"\x89PNG\r\n\x1a\n" + b"\x00" * (65536 - 8)
            while sent < total:
                chunk = piece[: min(len(piece), total - sent)]
                piece = b"\x00" * 65536
                self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                sent += len(chunk)
            self.wfile.write(b"0\r\n\r\n")
        elif path == "/declared-huge":
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(10 * 1024**3))
            self.end_headers()
            self.wfile.write(b"\x89PNG\r\n\x1a\n")
        elif path.startswith("/status/"):
            self._send(int(path.rsplit("/", 1)[1]), b"nope")
        else:
            self._send(404, b"not found")


if __name__ == "__main__":  # python tests/media_server.py: serve until Ctrl-C
    with MediaServer() as srv:
        print(srv.url("/"))
        for route in sorted(srv.files):
            print(" ", srv.url(route))
        threading.Event().wait()
