"""A multipart/form-data upload streamed to disk (POST /v1/files): the part named ``file`` is
written to a file as it arrives, the other fields (``purpose``) are kept in memory, so a
200 MB upload never sits in memory whole."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, BinaryIO

from app.errors import InvalidRequest, PayloadTooLarge

_BOUNDARY = re.compile(r'boundary="?([^";]+)"?', re.IGNORECASE)
_PARAM = re.compile(r'(\w+)\*?="((?:[^"\\]|\\.)*)"')
MAX_FIELD_BYTES = 64 * 1024
MULTIPART_SLACK = 1 << 20  # bytes of part headers and boundaries allowed over the file limit


class Upload:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.filename = ""
        self.size = 0
        self.lines = 0
        self.ends_with_newline = True
        self.fields: dict[str, str] = {}
        self.has_file = False


class _Parser:
    def __init__(self, boundary: bytes, upload: Upload, max_bytes: int, max_lines: int) -> None:
        self.delim = b"--" + boundary
        self.upload = upload
        self.max_bytes, self.max_lines = max_bytes, max_lines
        self.buf = bytearray()
        self.state = "preamble"
        self.name = ""
        self.field = bytearray()
        self.out: BinaryIO | None = None

    def feed(self, chunk: bytes) -> None:
        self.buf += chunk
        while self._step():
            pass

    def _step(self) -> bool:
        buf = self.buf
        if self.state == "preamble":
            at = buf.find(self.delim)
            if at < 0:
                del buf[: max(0, len(buf) - len(self.delim))]
                return False
            del buf[: at + len(self.delim)]
            self.state = "after"
            return True
        if self.state == "after":
            if len(buf) < 2:
                return False
            head = bytes(buf[:2])
            del buf[:2]
            self.state = "done" if head == b"--" else "headers"
            return self.state == "headers"
        if self.state == "headers":
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_FIELD_BYTES:
                    raise InvalidRequest("a multipart part's headers are too long", param="file")
                return False
            self._begin(bytes(buf[:end]).decode("utf-8", "replace"))
            del buf[: end + 4]
            self.state = "body"
            return True
        if self.state == "body":
            marker = b"\r\n" + self.delim
            at = buf.find(marker)
            if at < 0:
                keep = len(marker) - 1
                if len(buf) > keep:
                    self._data(bytes(buf[: len(buf) - keep]))
                    del buf[: len(buf) - keep]
                return False
            self._data(bytes(buf[:at]))
            del buf[: at + len(marker)]
            self._end()
            self.state = "after"
            return True
        return False  # done: the epilogue is ignored

    def _begin(self, headers: str) -> None:
        params: dict[str, str] = {}
        for line in headers.split("\r\n"):
            key, _, value = line.partition(":")
            if key.strip().lower() == "content-disposition":
                params = {k.lower(): v for k, v in _PARAM.findall(value)}
        self.name = params.get("name", "")
        if self.name == "file":
            if self.upload.has_file:
                raise InvalidRequest("send one file per upload", param="file")
            self.upload.has_file = True
            self.upload.filename = Path(params.get("filename", "")).name
            self.upload.path.parent.mkdir(parents=True, exist_ok=True)
            self.out = self.upload.path.open("wb")
        self.field = bytearray()

    def _data(self, data: bytes) -> None:
        if not data:
            return
        if self.out is None:
            self.field += data
            if len(self.field) > MAX_FIELD_BYTES:
                raise InvalidRequest(f"the form field {self.name!r} is too long", param=self.name)
            return
        up = self.upload
        up.size += len(data)
        up.lines += data.count(b"\n")
        up.ends_with_newline = data.endswith(b"\n")
        if up.size > self.max_bytes:
            raise PayloadTooLarge(f"the file is over {self.max_bytes} bytes", param="file")
        if up.lines > self.max_lines:
            raise InvalidRequest(
                f"the file has over {self.max_lines} lines; a batch input file has at most "
                f"{self.max_lines}",
                param="file",
            )
        self.out.write(data)

    def _end(self) -> None:
        if self.out is not None:
            self.out.close()
            self.out = None
        elif self.name:
            self.upload.fields[self.name] = self.field.decode("utf-8", "replace")

    def close(self) -> None:
        if self.out is not None:
            self.out.close()
            self.out = None


async def receive(request: Any, path: Path, max_bytes: int, max_lines: int) -> Upload:
    """Stream the body of a ``stream=True`` route; the ``file`` part goes to ``path`` (removed
    again on any error)."""
    content_type = request.headers.get("content-type", "")
    match = _BOUNDARY.search(content_type)
    if not content_type.lower().startswith("multipart/form-data") or match is None:
        raise InvalidRequest(
            "send the file as multipart/form-data, field 'file' (and 'purpose')", param="file"
        )
    request.stream.request_max_size = max_bytes + MULTIPART_SLACK
    upload = Upload(path)
    parser = _Parser(match.group(1).encode(), upload, max_bytes, max_lines)
    try:
        while (chunk := await request.stream.read()) is not None:
            parser.feed(chunk)
        if parser.state != "done":
            raise InvalidRequest("the multipart body ended early", param="file")
    except BaseException:
        parser.close()
        path.unlink(missing_ok=True)
        raise
    parser.close()
    if upload.size and not upload.ends_with_newline:
        upload.lines += 1
    return upload
