"""What the Batch API tests share: a request line, waiting for a batch's end, a file's lines."""

from __future__ import annotations

import time
from typing import Any

import orjson

FINAL = ("completed", "failed", "cancelled", "expired")


def request_line(custom_id: str, body: dict, url: str = "/v1/embeddings") -> bytes:
    return orjson.dumps({"custom_id": custom_id, "method": "POST", "url": url, "body": body})


def wait_batch(client: Any, batch_id: str, timeout: float = 60.0, poll: float = 0.05) -> Any:
    """The batch (openai client object) once its status is final; AssertionError at timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        batch = client.batches.retrieve(batch_id)
        if batch.status in FINAL:
            return batch
        time.sleep(poll)
    raise AssertionError(f"batch {batch_id} did not finish: {batch.status}")


def file_lines(client: Any, file_id: str | None) -> list[dict]:
    """The JSON lines of a file (none for no file)."""
    if not file_id:
        return []
    return [orjson.loads(x) for x in client.files.content(file_id).content.splitlines() if x]
