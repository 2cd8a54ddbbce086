"""The Batch API in the whole program: the server command with its embedded redis-server (real
Redis), the official openai client; a graceful restart mid-batch resumes it."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import httpx
import orjson
import pytest
from batch_checks import wait_batch
from server_process import ServerProcess

pytestmark = pytest.mark.slow


def test_batch_on_real_redis_survives_a_restart(tiny_bert_path: Path) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="mlxbt", dir="/tmp"))
    args = ["--model", str(tiny_bert_path), "--served-model-name", "tiny"]
    server = ServerProcess(args, data_dir=data_dir).wait_healthy()
    try:
        client = server.openai()
        n = 2500  # three windows (app.batches.WINDOW_LINES): the stop lands mid-batch
        bodies = [{"model": "tiny", "input": f"line {i} of the batch"} for i in range(n)]
        data = b"\n".join(
            orjson.dumps({"custom_id": f"c{i}", "method": "POST", "url": "/v1/embeddings",
                          "body": b})
            for i, b in enumerate(bodies)
        )  # fmt: skip
        f = client.files.create(file=("in.jsonl", data), purpose="batch")
        batch = client.batches.create(
            input_file_id=f.id, endpoint="/v1/embeddings", completion_window="24h"
        )
        deadline = time.monotonic() + 60
        while client.batches.retrieve(batch.id).request_counts.completed < 1000:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        server.stop()  # SIGINT mid-batch (or just after it finished, on a fast machine)
        server = ServerProcess(args, data_dir=data_dir).wait_healthy()
        client = server.openai()
        assert client.batches.retrieve(batch.id).status in ("in_progress", "completed")
        done = wait_batch(client, batch.id, timeout=120, poll=0.1)
        assert done.status == "completed", done
        assert done.request_counts.completed == n and done.request_counts.failed == 0
        lines = [orjson.loads(x) for x in client.files.content(done.output_file_id).content
                 .splitlines()]  # fmt: skip
        assert sorted(x["custom_id"] for x in lines) == sorted(f"c{i}" for i in range(n))
        by_id = {x["custom_id"]: x for x in lines}
        for i in (0, 1017, n - 1):
            direct = httpx.post(server.url + "/v1/embeddings", json=bodies[i]).json()
            assert by_id[f"c{i}"]["response"]["body"]["data"] == direct["data"]
    finally:
        server.stop()
