"""``mlx-embeddings-batch`` (app.batch_cli) against a real server (socket, fakeredis, its local
worker): submit --wait with its progress bar, status, download, errors; once as the installed
console script in a subprocess."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from http_servers import MV_MODEL, MV_SETTINGS, FakeAdapter, Served, serve_with_jobs

from app import batch_cli

KEY = "sk-batch-cli-0123456789"
OTHER = "sk-batch-cli-other-98765"


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[Served]:
    settings = dataclasses.replace(
        MV_SETTINGS, api_keys=(KEY, OTHER), data_dir=tmp_path_factory.mktemp("data")
    )
    adapter = FakeAdapter(kind="multi_vector", name=MV_MODEL, dim=8, max_tokens=16)
    served, thread, _ = serve_with_jobs(settings, adapter)
    yield served
    thread.stop()


def _input(tmp_path: Path, n: int, bad: bool = True) -> tuple[Path, list[dict]]:
    bodies = [{"model": MV_MODEL, "input": [f"cli text {i}"]} for i in range(n)]
    lines = [orjson.dumps({"custom_id": f"r{i}", "method": "POST", "url": "/v1/embeddings",
                           "body": b}) for i, b in enumerate(bodies)]  # fmt: skip
    if bad:
        lines.insert(1, b"{not json")
    path = tmp_path / "requests.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path, bodies


def _jsonl(path: Path) -> list[dict]:
    return [orjson.loads(x) for x in path.read_bytes().splitlines() if x]


def test_submit_wait_shows_progress_and_downloads(served: Served, tmp_path: Path, capsys) -> None:
    path, bodies = _input(tmp_path, 30)
    out, err = tmp_path / "out.jsonl", tmp_path / "err.jsonl"
    args = ["submit", str(path), "--wait", "--poll", "0.05", "-o", str(out), "--errors", str(err)]
    rc = batch_cli.main(["--server", served.url + "/v1", "--api-key", KEY, *args])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    batch_id = captured.out.split()[0]
    assert batch_id.startswith("batch_")
    assert "line" in captured.err and "completed" in captured.err  # the bar, the summary
    lines = {x["custom_id"]: x for x in _jsonl(out)}
    assert sorted(lines) == sorted(f"r{i}" for i in range(30))
    direct = httpx.post(served.url + "/v1/embeddings", json=bodies[3],
                        headers={"Authorization": f"Bearer {KEY}"}).json()  # fmt: skip
    assert lines["r3"]["response"]["body"]["data"] == direct["data"]
    errors = _jsonl(err)
    assert len(errors) == 1 and errors[0]["error"]["code"] == "invalid_request"
    # status and download of the finished batch
    assert batch_cli.main(["--server", served.url, "--api-key", KEY, "status", batch_id]) == 0
    status = capsys.readouterr().out
    assert f"{batch_id} completed: 30 completed, 1 failed, 31 total" in status
    again = tmp_path / "again.jsonl"
    args = ["download", batch_id, "-o", str(again), "--errors", str(tmp_path / "e2.jsonl")]
    assert batch_cli.main(["--server", served.url, "--api-key", KEY, *args]) == 0
    assert again.read_bytes() == out.read_bytes()
    # another key: its 404, said clearly
    assert batch_cli.main(["--server", served.url, "--api-key", OTHER, "status", batch_id]) == 1
    assert "404" in capsys.readouterr().err


def test_console_script_submit_status_watch_download(served: Served, tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("mlx-embeddings-batch")
    assert exe.exists(), "run uv sync: the console script is missing"
    path, _ = _input(tmp_path, 12, bad=False)
    base = [str(exe), "--server", served.url, "--api-key", KEY]

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*base, *args], capture_output=True, text=True, timeout=120,
                              cwd=tmp_path)  # fmt: skip

    sub = cli("submit", str(path))
    assert sub.returncode == 0, sub.stderr
    batch_id = sub.stdout.strip()
    watched = cli("status", batch_id, "--watch", "--poll", "0.05")
    assert watched.returncode == 0, watched.stderr
    assert "completed: 12 completed, 0 failed, 12 total" in watched.stdout
    got = cli("download", batch_id)
    assert got.returncode == 0, got.stderr
    out = tmp_path / f"{batch_id}.output.jsonl"
    assert len(_jsonl(out)) == 12 and not (tmp_path / f"{batch_id}.errors.jsonl").exists()
    missing = cli("status", "batch_nope")
    assert missing.returncode == 1 and "404" in missing.stderr and "no batch" in missing.stderr
    nofile = cli("submit", str(tmp_path / "nope.jsonl"))
    assert nofile.returncode == 1 and "error:" in nofile.stderr
