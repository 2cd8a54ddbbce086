"""Files of the OpenAI Files API (``/v1/files``), kept for the Batch API.

A file's bytes live under ``<data dir>/files/<id>``; its metadata in Redis, without a TTL so
that the cache's ``volatile-lru`` eviction never touches it::

    mlxemb:file:{id}         hash   id, bytes, created_at, filename, purpose, owner
    mlxemb:files:{owner}     zset   id -> created_at (the owner's files, for GET /v1/files)

A file belongs to the API key that uploaded it (:attr:`app.auth.Principal.owner`); any other
key gets 404 for it. Servers sharing one Redis must share the files directory too.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from pathlib import Path
from typing import Any

import redis.asyncio

from app.cache import KEY_PREFIX
from app.errors import FileNotFound, InvalidRequest
from app.uploads import receive

FILE_ID_PREFIX = "file-"
MAX_FILE_BYTES = 200 * 1024 * 1024  # OpenAI's limit for a batch input file
MAX_FILE_LINES = 50_000


def file_key(file_id: str) -> str:
    return f"{KEY_PREFIX}file:{file_id}"


def owner_index(owner: str) -> str:
    return f"{KEY_PREFIX}files:{owner or '-'}"


def _s(v: bytes | str | None) -> str:
    return v.decode() if isinstance(v, bytes) else (v or "")


def file_object(h: dict[str, str]) -> dict[str, Any]:
    """The OpenAI file object."""
    return {
        "id": h["id"],
        "object": "file",
        "bytes": int(h.get("bytes") or 0),
        "created_at": int(float(h.get("created_at") or 0)),
        "filename": h.get("filename", ""),
        "purpose": h.get("purpose", ""),
        "status": "processed",
        "status_details": None,
    }


class FileStore:
    """Files on disk under ``root``, metadata in Redis (one asyncio client, bound lazily)."""

    def __init__(self, root: Path, handle: Any) -> None:
        self.root = Path(root).expanduser()
        self.handle = handle
        self._redis: redis.asyncio.Redis | None = None

    @property
    def redis(self) -> redis.asyncio.Redis:
        if self._redis is None:
            self._redis = self.handle.async_client(socket_timeout=10.0)
        return self._redis

    def path(self, file_id: str) -> Path:
        return self.root / file_id

    async def upload(self, request: Any, owner: str) -> dict:
        """POST /v1/files: the multipart body streamed to disk, then checked and registered."""
        file_id = FILE_ID_PREFIX + uuid.uuid4().hex
        part = self.root / f"{file_id}.part"
        up = await receive(request, part, MAX_FILE_BYTES, MAX_FILE_LINES)
        try:
            purpose = up.fields.get("purpose", "")
            if not up.has_file:
                raise InvalidRequest("send the file as multipart/form-data field 'file'", "file")
            if purpose != "batch":
                raise InvalidRequest(
                    f"purpose must be 'batch' (this server keeps files for the Batch API), "
                    f"not {purpose!r}",
                    param="purpose",
                )
            if up.lines > MAX_FILE_LINES:
                raise InvalidRequest(
                    f"the file has {up.lines} lines; a batch input file has at most "
                    f"{MAX_FILE_LINES}",
                    param="file",
                )
            if not up.size:
                raise InvalidRequest("the file is empty", param="file")
            await asyncio.to_thread(os.replace, part, self.path(file_id))
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        return await self._register(file_id, up.size, up.filename, purpose, owner)

    async def adopt(self, path: Path, *, filename: str, purpose: str, owner: str) -> dict:
        """A file written elsewhere under ``root`` (a batch's output), moved in as a new file."""
        file_id = FILE_ID_PREFIX + uuid.uuid4().hex
        size = path.stat().st_size
        await asyncio.to_thread(os.replace, path, self.path(file_id))
        return await self._register(file_id, size, filename, purpose, owner)

    async def _register(
        self, file_id: str, size: int, filename: str, purpose: str, owner: str
    ) -> dict:
        now = time.time()
        h = {
            "id": file_id, "bytes": str(size), "created_at": repr(now),
            "filename": filename or "upload.jsonl", "purpose": purpose, "owner": owner,
        }  # fmt: skip
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(file_key(file_id), mapping=h)
        pipe.zadd(owner_index(owner), {file_id: now})
        await pipe.execute()
        return file_object(h)

    async def meta(self, file_id: str, owner: str) -> dict[str, str]:
        raw = await self.redis.hgetall(file_key(file_id)) if file_id.startswith("file-") else {}
        h = {_s(k): _s(v) for k, v in raw.items()}
        if not h or h.get("owner", "") != owner:
            raise FileNotFound(f"no file with id {file_id!r}", param="file_id")
        return h

    async def get(self, file_id: str, owner: str) -> dict:
        return file_object(await self.meta(file_id, owner))

    async def content(self, file_id: str, owner: str) -> bytes:
        return await asyncio.to_thread((await self.content_path(file_id, owner)).read_bytes)

    async def content_path(self, file_id: str, owner: str) -> Path:
        await self.meta(file_id, owner)
        path = self.path(file_id)
        if not path.is_file():
            raise FileNotFound(
                f"the content of file {file_id!r} is not in this server's files directory "
                f"({self.root}); servers sharing one Redis must share that directory",
                param="file_id",
            )
        return path

    async def list(
        self,
        owner: str,
        *,
        purpose: str | None = None,
        limit: int = 10000,
        after: str | None = None,
    ) -> dict:
        ids = [_s(x) for x in await self.redis.zrevrange(owner_index(owner), 0, -1)]
        if after is not None and after in ids:
            ids = ids[ids.index(after) + 1 :]
        data: list[dict] = []
        for file_id in ids:
            raw = await self.redis.hgetall(file_key(file_id))
            h = {_s(k): _s(v) for k, v in raw.items()}
            if h and (purpose is None or h.get("purpose") == purpose):
                data.append(file_object(h))
        page = data[:limit]
        return {
            "object": "list",
            "data": page,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
            "has_more": len(data) > limit,
        }

    async def delete(self, file_id: str, owner: str) -> dict:
        await self.meta(file_id, owner)
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(file_key(file_id))
        pipe.zrem(owner_index(owner), file_id)
        await pipe.execute()
        await asyncio.to_thread(self.path(file_id).unlink, missing_ok=True)
        return {"id": file_id, "object": "file", "deleted": True}
