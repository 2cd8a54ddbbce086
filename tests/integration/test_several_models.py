"""Several models in the real programs: ``mlx-embeddings-server --model A=a --model B=b`` (its
embedded Redis, no local worker) and one ``mlx-embeddings-worker`` holding both models, which
takes the jobs of each model from that model's queue."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from server_process import REPO, ServerProcess

pytestmark = pytest.mark.slow


def _worker(args: list[str]) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLX_EMB_")}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.Popen(
        [sys.executable, "-m", "workers.cli", *args, "--log-level", "warning"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def _job(http: httpx.Client, body: dict) -> dict:
    sub = http.post("/v1/embeddings/jobs", json=body, headers={"Cache-Control": "no-cache"})
    assert sub.status_code == 202, sub.text
    job_id = sub.json()["id"]
    deadline = time.monotonic() + 120
    while (status := http.get(f"/v1/embeddings/jobs/{job_id}").json())["status"] != "succeeded":
        assert status["status"] in ("queued", "running"), status
        assert time.monotonic() < deadline, status
        time.sleep(0.1)
    return http.get(f"/v1/embeddings/jobs/{job_id}/result").json()


def test_one_worker_serves_the_jobs_of_both_models(
    tiny_bert_path: Path, tiny_colqwen_path: Path
) -> None:
    models = ["--model", f"{tiny_bert_path}=bert", "--model", f"{tiny_colqwen_path}=colqwen"]
    server = ServerProcess([*models, "--no-local-worker"])
    worker = None
    try:
        server.wait_healthy()
        worker = _worker([*models, "--data-dir", str(server.data_dir)])
        with httpx.Client(base_url=server.url, timeout=60) as http:
            deadline = time.monotonic() + 120
            while True:
                health = http.get("/health").json()
                alive = [m["alive"] for m in health["workers"]["models"].values()]
                if alive == [1, 1]:
                    break
                assert worker.poll() is None, worker.stdout.read() if worker.stdout else ""
                assert time.monotonic() < deadline, health
                time.sleep(0.2)
            assert [m["id"] for m in http.get("/v1/models").json()["data"]] == ["bert", "colqwen"]
            for model, inputs in (("bert", ["a cat", "stock prices"]), ("colqwen", ["sales"])):
                body = {"model": model, "input": inputs}
                job = _job(http, body)
                inline = http.post(
                    "/v1/embeddings", json=body, headers={"Cache-Control": "no-cache"}
                ).json()
                assert job["model"] == model
                for a, b in zip(job["data"], inline["data"], strict=True):
                    np.testing.assert_allclose(a["embedding"], b["embedding"], atol=1e-5)
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(20)
        server.stop()
