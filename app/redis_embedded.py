"""The Redis the server uses: an external one (``--redis-url``), an embedded redis-server
process, or — only when no redis-server binary exists anywhere — an in-memory fakeredis.

The embedded server keeps its AOF in ``<data dir>/redis``, listens only on a unix socket there
(TCP on 127.0.0.1 when the socket path is too long), and runs ``maxmemory`` with
``volatile-lru``: only keys with a TTL can be evicted, and only cache entries carry one, so
eviction can never drop job data (job keys are swept by :mod:`app.jobs` after ``--job-ttl``).

It never outlives the server: it runs in its own process group and

* on Linux, when started from the main thread, gets ``prctl(PR_SET_PDEATHSIG, SIGTERM)`` (the
  kernel signals it when the thread that forked it dies, so this is only used from the main
  thread, which lives as long as the process);
* elsewhere (macOS, or started from another thread) runs under a ``sh`` wrapper that reads a
  pipe whose write end only this process holds; when this process dies for any reason, even
  ``kill -9``, the read ends with EOF and the wrapper SIGTERMs redis.

SIGTERM makes redis flush the AOF and exit, so data survives either way. A lock file
(``flock``) in the data dir stops a second server from starting a second redis on the same
files.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import redis
import redis.asyncio

from app.redis_binary import find_redis_server
from app.settings import Settings

log = logging.getLogger(__name__)

HandleKind = Literal["external", "embedded", "fakeredis"]

_PR_SET_PDEATHSIG = 1
_MAX_UNIX_PATH = 100  # sun_path is 104 (macOS) / 108 (Linux) bytes including the NUL
_START_TIMEOUT = 60.0  # a large AOF takes a while to load
_STOP_TIMEOUT = 30.0

# Client options: fail fast when Redis is gone instead of hanging a request.
CLIENT_OPTIONS: dict[str, Any] = {"socket_connect_timeout": 2.0, "health_check_interval": 30}

_WRAPPER = (
    # $1.. = redis-server argv. fd 0 is the pipe; redis itself gets /dev/null.
    'exec 3<&0; "$@" </dev/null 3<&- & pid=$!; '
    "{ read _ <&3; kill -TERM $pid 2>/dev/null; } & watcher=$!; "
    "wait $pid; st=$?; kill $watcher 2>/dev/null; exit $st"
)


class DataDirLocked(RuntimeError):
    pass


@dataclass
class RedisHandle:
    """A reachable Redis and how to get clients for it. ``stop()`` ends what we started."""

    kind: HandleKind
    url: str
    fake_server: Any = None
    process: subprocess.Popen | None = None
    data_dir: Path | None = None
    binary: str = ""
    maxmemory: str = ""
    pipe_fd: int | None = None
    _on_stop: list[Callable[[], None]] = field(default_factory=list, repr=False)
    _stopped: bool = False

    def sync_client(self, **kwargs: Any) -> redis.Redis:
        """A new synchronous client (bytes in/out, as RQ needs)."""
        if self.kind == "fakeredis":
            import fakeredis

            return fakeredis.FakeRedis(server=self.fake_server)
        return redis.Redis.from_url(self.url, **{**CLIENT_OPTIONS, **kwargs})

    def async_client(self, **kwargs: Any) -> redis.asyncio.Redis:
        """A new asyncio client; bind it to one event loop (create it inside that loop)."""
        if self.kind == "fakeredis":
            import fakeredis

            return fakeredis.FakeAsyncRedis(server=self.fake_server)
        return redis.asyncio.Redis.from_url(self.url, **{**CLIENT_OPTIONS, **kwargs})

    def alive(self) -> bool:
        """False once a redis-server we started has exited (not stopped by us)."""
        return self.process is None or self._stopped or self.process.poll() is None

    @property
    def persistent(self) -> bool:
        return self.kind != "fakeredis"

    def stop(self, timeout: float = _STOP_TIMEOUT) -> None:
        if self._stopped:
            return
        self._stopped = True
        for fn in reversed(self._on_stop):
            try:
                fn()
            except Exception:  # keep stopping the rest
                log.exception("error while stopping redis")
        self._on_stop.clear()


# ---- public entry point --------------------------------------------------------------------
def mask_url(url: str) -> str:
    """The URL with any password hidden, for logs."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def start_redis(settings: Settings, *, watcher: Literal["auto", "pdeathsig", "pipe"] = "auto"):
    """Connect to ``--redis-url``, or start the embedded redis-server, or fall back to fakeredis."""
    if settings.redis_url:
        return RedisHandle(kind="external", url=settings.redis_url)
    binary = find_redis_server(settings.redis_server)
    if binary is None:
        return start_fakeredis(settings.redis_maxmemory)
    return start_embedded(binary, settings.resolved_data_dir, settings.redis_maxmemory, watcher)


def start_fakeredis(maxmemory: str = "1gb") -> RedisHandle:
    """The in-memory fallback, bounded like the embedded Redis (app.redis_fake)."""
    from app.redis_fake import bounded_fake_server, fallback_warning, parse_memory

    log.warning(fallback_warning(maxmemory))
    server = bounded_fake_server(parse_memory(maxmemory))
    return RedisHandle(kind="fakeredis", url="fakeredis://", fake_server=server)


# ---- the embedded redis-server ---------------------------------------------------------------
def start_embedded(
    binary: str,
    data_dir: Path,
    maxmemory: str,
    watcher: Literal["auto", "pdeathsig", "pipe"] = "auto",
) -> RedisHandle:
    rdir = Path(data_dir).expanduser().resolve() / "redis"
    rdir.mkdir(parents=True, exist_ok=True)
    lock_fd = _acquire_lock(rdir)
    handle = RedisHandle(kind="embedded", url="", data_dir=rdir, binary=binary, maxmemory=maxmemory)
    handle._on_stop.append(lambda: _release_lock(lock_fd, rdir))
    try:
        _wait_previous_redis_gone(rdir)
        _start_process(handle, binary, rdir, maxmemory, watcher)
    except BaseException:
        handle.stop()
        raise
    (rdir / "url").write_text(handle.url + "\n")
    handle._on_stop.append(lambda: _unlink(rdir / "url"))
    log.info("embedded redis-server (%s) on %s, data in %s", binary, handle.url, rdir)
    return handle


def restart_embedded(handle: RedisHandle) -> None:
    """Start the embedded redis-server again on the same data dir and socket (it reloads its
    AOF), after it died. Not from the main thread: the pipe watcher ties it to this process."""
    assert handle.kind == "embedded" and handle.data_dir is not None
    if handle.pipe_fd is not None:
        with contextlib.suppress(OSError):
            os.close(handle.pipe_fd)
        handle.pipe_fd = None
    _start_process(handle, handle.binary, handle.data_dir, handle.maxmemory, "pipe", first=False)


def embedded_url(data_dir: Path) -> str | None:
    """The URL of an embedded Redis a server is running on ``data_dir`` (for local workers)."""
    path = Path(data_dir).expanduser() / "redis" / "url"
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def _acquire_lock(rdir: Path) -> int:
    path = rdir / "server.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise DataDirLocked(
            f"data dir {rdir.parent} is in use by another mlx-embeddings-server (pid {holder}); "
            "stop it, or give this one its own --data-dir, or share it with --redis-url"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _release_lock(fd: int, rdir: Path) -> None:
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
    os.close(fd)


def _unlink(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _wait_previous_redis_gone(rdir: Path, timeout: float = 15.0) -> None:
    """A redis left by a killed server is still flushing its AOF: wait for it to exit."""
    pidfile = rdir / "redis.pid"
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return
    deadline = time.monotonic() + timeout
    while _pid_alive(pid) and _is_redis(pid):
        if time.monotonic() > deadline:
            raise DataDirLocked(
                f"a redis-server (pid {pid}) still runs on {rdir}; stop it before starting"
            )
        time.sleep(0.05)
    _unlink(pidfile)


def _is_redis(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        return b"redis" in cmdline or b"valkey" in cmdline
    except OSError:
        # No /proc (macOS): trust the pid.
        return sys.platform != "linux"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pdeathsig() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    # The parent may have died between fork and prctl.
    if os.getppid() == 1:
        os._exit(1)


def _start_process(
    handle: RedisHandle, binary: str, rdir: Path, maxmemory: str, watcher: str, first: bool = True
) -> None:
    sock = rdir / "redis.sock"
    _unlink(sock)
    use_unix = len(str(sock)) <= _MAX_UNIX_PATH
    if use_unix:
        port = 0
    else:  # a restart keeps the port its clients know
        port = _free_port() if first else int(handle.url.rsplit(":", 1)[1].split("/")[0])
    args = [
        binary,
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--protected-mode", "yes",
        "--dir", str(rdir),
        "--appendonly", "yes",
        "--appendfsync", "everysec",
        "--save", "",
        "--maxmemory", maxmemory,
        "--maxmemory-policy", "volatile-lru",
        "--daemonize", "no",
        "--pidfile", str(rdir / "redis.pid"),
        "--logfile", str(rdir / "redis.log"),
    ]  # fmt: skip
    if use_unix:
        args += ["--unixsocket", str(sock), "--unixsocketperm", "700"]
    if watcher == "auto":
        linux_main = (
            sys.platform == "linux" and threading.current_thread() is threading.main_thread()
        )
        watcher = "pdeathsig" if linux_main else "pipe"
    if watcher == "pdeathsig":
        proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_pdeathsig,
        )
    else:
        read_fd, write_fd = os.pipe()  # both non-inheritable; Popen dups read_fd onto stdin
        try:
            proc = subprocess.Popen(
                ["/bin/sh", "-c", _WRAPPER, "redis-wrapper", *args],
                stdin=read_fd,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            os.close(read_fd)
        handle.pipe_fd = write_fd
    handle.process = proc
    if first:
        handle.url = f"unix://{sock}" if use_unix else f"redis://127.0.0.1:{port}/0"
        handle._on_stop.append(lambda: _close_pipe(handle))
        handle._on_stop.append(lambda: _stop_process(handle))
    _wait_ready(handle, rdir)


def _close_pipe(handle: RedisHandle) -> None:
    if handle.pipe_fd is not None:
        with contextlib.suppress(OSError):
            os.close(handle.pipe_fd)
        handle.pipe_fd = None


def _wait_ready(handle: RedisHandle, rdir: Path) -> None:
    assert handle.process is not None
    deadline = time.monotonic() + _START_TIMEOUT
    client = redis.Redis.from_url(handle.url, socket_connect_timeout=1.0)
    try:
        while True:
            if handle.process.poll() is not None:
                raise RuntimeError(
                    f"redis-server exited with status {handle.process.returncode}:\n"
                    + _log_tail(rdir)
                )
            try:
                client.ping()
                return
            except redis.exceptions.BusyLoadingError:
                pass  # loading the AOF
            except (redis.exceptions.ConnectionError, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not become ready in time:\n" + _log_tail(rdir))
            time.sleep(0.01)
    finally:
        client.close()


def _log_tail(rdir: Path, lines: int = 20) -> str:
    try:
        return "\n".join((rdir / "redis.log").read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no redis.log)"


def _stop_process(handle: RedisHandle) -> None:
    proc = handle.process
    if proc is None or proc.poll() is not None:
        return
    # SHUTDOWN flushes the AOF; then the wrapper (if any) exits too.
    try:
        client = redis.Redis.from_url(handle.url, socket_connect_timeout=1.0, socket_timeout=5.0)
        with contextlib.suppress(redis.exceptions.ConnectionError):
            client.shutdown()
        client.close()
    except Exception:
        log.debug("SHUTDOWN failed; sending SIGTERM", exc_info=True)
    try:
        proc.wait(_STOP_TIMEOUT)
        return
    except subprocess.TimeoutExpired:
        pass
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(10)
            return
        except subprocess.TimeoutExpired:
            continue
