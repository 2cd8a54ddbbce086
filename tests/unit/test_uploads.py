"""app.uploads: the multipart body of POST /v1/files, streamed to disk."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

import pytest

from app.errors import InvalidRequest, PayloadTooLarge
from app.uploads import receive

BOUNDARY = "----b0undary"
# bytes that look like the start of a boundary, CRLFs and a final line without newline
CONTENT = b'{"a": 1}\r\n{"b": "--" }\n\r\n------b0und\n{"c": 3}'


def _body(content: bytes = CONTENT, purpose: str = "batch", file_first: bool = False) -> bytes:
    purpose_part = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\n{purpose}\r\n'
    ).encode()
    file_part = (
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="dir/in.jsonl"\r\nContent-Type: application/octet-stream\r\n\r\n'
        ).encode()
        + content
        + b"\r\n"
    )
    parts = file_part + purpose_part if file_first else purpose_part + file_part
    return b"preamble\r\n" + parts + f"--{BOUNDARY}--\r\nepilogue".encode()


class _Stream:
    def __init__(self, body: bytes, size: int) -> None:
        self.chunks = [body[i : i + size] for i in range(0, len(body), size)]
        self.request_max_size = 0

    async def read(self) -> bytes | None:
        return self.chunks.pop(0) if self.chunks else None


def _request(body: bytes, size: int, content_type: str | None = None) -> SimpleNamespace:
    ctype = content_type or f"multipart/form-data; boundary={BOUNDARY}"
    return SimpleNamespace(headers={"content-type": ctype}, stream=_Stream(body, size))


@pytest.mark.parametrize("size", [1, 2, 7, 64, 100_000])
@pytest.mark.parametrize("file_first", [False, True])
def test_any_chunking_gives_the_exact_bytes(tmp_path: Path, size: int, file_first: bool) -> None:
    path = tmp_path / "f.part"
    request = _request(_body(file_first=file_first), size)
    up = asyncio.run(receive(request, path, 1000, 10))
    assert path.read_bytes() == CONTENT and up.size == len(CONTENT)
    assert up.fields == {"purpose": "batch"} and up.filename == "in.jsonl" and up.has_file
    assert up.lines == CONTENT.count(b"\n") + 1
    assert request.stream.request_max_size > 1000


def test_limits_and_bad_bodies_leave_no_file(tmp_path: Path) -> None:
    path = tmp_path / "f.part"
    with pytest.raises(PayloadTooLarge):
        asyncio.run(receive(_request(_body(b"x" * 5000), 100), path, 1000, 10))
    assert not path.exists()
    with pytest.raises(InvalidRequest, match="lines"):
        asyncio.run(receive(_request(_body(b"{}\n" * 11), 5), path, 1000, 10))
    assert not path.exists()
    with pytest.raises(InvalidRequest, match="ended early"):
        asyncio.run(receive(_request(_body()[:-40], 64), path, 1000, 10))
    assert not path.exists()
    with pytest.raises(InvalidRequest, match="multipart"):
        asyncio.run(receive(_request(b"{}", 64, "application/json"), path, 1000, 10))
