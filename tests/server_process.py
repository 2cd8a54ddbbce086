"""The real server command (``python -m app``) as a subprocess on a free port, for tests that
need the whole program: embedded Redis, in-process worker, real socket."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """``args`` go to the server; ``data_dir`` (default: a fresh short temp dir, removed on
    ``stop`` unless given) holds the embedded Redis."""

    def __init__(self, args: list[str], module: str = "app", data_dir: Path | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._own_dir = data_dir is None
        # short path: the embedded Redis listens on a unix socket inside it
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix="mlxemb", dir="/tmp"))
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLX_EMB_")}
        env["PYTHONPATH"] = str(REPO)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, *args, "--port", str(self.port)]
            + ["--data-dir", str(self.data_dir)],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def wait_healthy(self, timeout: float = 180) -> ServerProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.output()}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"server not healthy in {timeout}s")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)
        return self.proc.returncode

    def output(self) -> str:
        if self.proc.poll() is None:
            return "(running)"
        return self.proc.stdout.read() if self.proc.stdout else ""

    def openai(self):
        from openai import OpenAI

        return OpenAI(base_url=self.url + "/v1", api_key="unused", max_retries=0, timeout=120)
