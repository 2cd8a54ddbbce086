"""The server and worker commands as a new operator meets them (real processes): binding rules,
API keys end to end, and one clear line for each start-up failure."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import subprocess
import sys
import time

import httpx
import pytest
from server_process import REPO, ServerProcess, free_port

from app.ingest.client import EmbeddingsClient, ServerUnreachable, start_hint
from app.redis_embedded import find_redis_server


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLX_EMB_")}
    env["PYTHONPATH"] = str(REPO)
    return env


def run_cli(args: list[str], module: str = "app", timeout: float = 120) -> tuple[int, str]:
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO, env=_env(), capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    return proc.returncode, proc.stdout + proc.stderr


def run_in_pty(args: list[str], timeout: float = 120) -> tuple[int, str]:
    """Run the server with a terminal as its stdout/stderr (Sanic's hints only show there)."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "app", *args],
        cwd=REPO, env=_env(), stdin=subprocess.DEVNULL, stdout=follower, stderr=follower,
    )  # fmt: skip
    os.close(follower)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            data = os.read(leader, 65536)
        except OSError:  # the process closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    rc = proc.wait(timeout=30)
    return rc, b"".join(chunks).decode(errors="replace")


def test_non_loopback_bind_without_keys_is_refused(tmp_path) -> None:
    rc, out = run_cli(["--model", "org/any", "--host", "0.0.0.0", "--data-dir", str(tmp_path)])
    assert rc == 2, out
    assert "refusing to serve on 0.0.0.0 without an API key" in out
    assert "--allow-unauthenticated" in out and "Traceback" not in out


def test_an_unreadable_or_empty_key_file_stops_the_server(tmp_path) -> None:
    empty = tmp_path / "keys"
    empty.write_text("# nothing yet\n")
    for key_file, message in ((empty, "holds no key"), (tmp_path / "nope", "cannot read")):
        rc, out = run_cli(["--model", "org/any", "--api-key-file", str(key_file)])
        assert rc == 2 and f"{message}" in out and "Traceback" not in out, out


def test_a_missing_model_path_says_so(tmp_path) -> None:
    missing = tmp_path / "no" / "such-model"
    rc, out = run_cli(["--model", str(missing), "--data-dir", str(tmp_path)])
    assert rc == 2, out
    assert f"--model {missing}: no such directory" in out
    assert "Repo id" not in out and "Traceback" not in out
    rc, out = run_cli(["--model", str(missing), "--redis-url", "redis://x"], module="workers.cli")
    assert rc == 2 and "no such directory" in out, out


def test_a_model_that_cannot_load_is_one_line_and_no_sanic_hint(tmp_path) -> None:
    model = tmp_path / "bogus-model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "bogus"}))
    rc, out = run_in_pty(
        ["--model", str(model), "--port", str(free_port()), "--data-dir", str(tmp_path / "d")]
    )
    assert rc == 1, out
    lines = [line for line in out.splitlines() if "cannot serve" in line]
    assert len(lines) == 1 and "model type 'bogus'" in lines[0], out
    assert "Traceback" not in out, out
    assert "--dev" not in out and "PRODUCTION mode" not in out, out
    rc, out = run_cli(["--model", str(model), "--redis-url", "redis://127.0.0.1:1/0"],
                      module="workers.cli")  # fmt: skip
    assert rc == 1, out
    assert "cannot serve" in out and "model type 'bogus'" in out and "Traceback" not in out


@pytest.mark.skipif(find_redis_server() is None, reason="needs redis-server (the embedded Redis)")
def test_a_locked_data_dir_is_its_message_and_exit_1(tmp_path, tiny_bert_path) -> None:
    rdir = tmp_path / "redis"
    rdir.mkdir()
    fd = os.open(rdir / "server.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.pwrite(fd, b"4242\n", 0)
        rc, out = run_cli(
            ["--model", str(tiny_bert_path), "--port", str(free_port()),
             "--data-dir", str(tmp_path)]
        )  # fmt: skip
    finally:
        os.close(fd)
    assert rc == 1, out
    assert "is in use by another mlx-embeddings-server (pid 4242)" in out
    assert "Traceback" not in out


def test_keys_end_to_end_on_a_non_loopback_bind(tiny_bert_path) -> None:
    key = "sk-e2e-secret-value"
    server = ServerProcess(
        ["--model", str(tiny_bert_path), "--host", "0.0.0.0", "--api-key", key, "--no-cache"]
    )
    try:
        server.wait_healthy(180)  # /health is public by default
        body = {"model": str(tiny_bert_path), "input": ["hello"]}
        r = httpx.post(server.url + "/v1/embeddings", json=body, timeout=30)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        r = httpx.post(
            server.url + "/v1/embeddings", json=body, timeout=30,
            headers={"Authorization": f"Bearer {key}"},
        )  # fmt: skip
        assert r.status_code == 200, r.text
        assert httpx.head(server.url + "/health", timeout=10).status_code == 200
    finally:
        server.stop()
    out = server.output()
    assert key not in out
    assert "API keys required (1): key-" in out
    assert "POST /v1/embeddings 200 items=1" in out  # the access log line


def test_worker_help_shows_only_worker_flags(capsys) -> None:
    from workers.cli import parse_args

    with pytest.raises(SystemExit) as info:
        parse_args(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert "Worker of mlx-embeddings-server" in text
    for flag in ("--model", "--redis-url", "--queue-name", "--burst", "--dtype"):
        assert flag in text
    for server_flag in ("--host", "--port", "--max-body-bytes", "--api-key", "--metrics-key",
                        "--max-inputs", "--allowed-media-domains", "--access-log"):  # fmt: skip
        assert server_flag not in text


def test_ingest_hint_names_the_server_it_tried() -> None:
    assert "--port 9999 " in start_hint("http://127.0.0.1:9999")
    remote = start_hint("http://10.1.2.3:7000/v1")
    assert "--host 10.1.2.3 --port 7000" in remote and "8888" not in remote
    port = free_port()
    with (
        EmbeddingsClient(f"http://127.0.0.1:{port}", timeout=5) as client,
        pytest.raises(ServerUnreachable) as info,
    ):
        client.model_id()
    assert f"--port {port} " in str(info.value) and "8888" not in str(info.value)


def test_server_help_lists_the_security_flags() -> None:
    rc, out = run_cli(["--help"])
    assert rc == 0
    for text in ("--api-key", "MLX_EMB_API_KEYS", "--api-key-file", "--allow-unauthenticated",
                 "--public-health", "--metrics-key", "--access-log"):  # fmt: skip
        assert text in out
