"""A small synchronous client for the embeddings server: models, /v1/embeddings and the
async jobs API (``/v1/embeddings/jobs``)."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np

DEFAULT_SERVER = "http://127.0.0.1:8888"


def start_hint(url: str) -> str:
    """How to start a server at ``url`` (its host and port), or point --server elsewhere."""
    parsed = httpx.URL(url)
    where = f"--port {parsed.port or (443 if parsed.scheme == 'https' else 80)}"
    if parsed.host not in ("127.0.0.1", "localhost", "::1", ""):
        where = f"--host {parsed.host} {where} --api-key KEY"
    return (
        f"start one with: mlx-embeddings-server --model qnguyen3/colqwen2.5-v0.2-mlx {where} "
        "(or pass --server URL)"
    )


TERMINAL = frozenset({"succeeded", "failed", "cancelled"})


class ServerError(RuntimeError):
    """The server answered with an error (``status`` is the HTTP status, 0 if none)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class ServerUnreachable(ServerError):
    pass


class JobFailed(ServerError):
    pass


@dataclass
class EmbeddingItem:
    """One ``data`` item of an embeddings response, decoded."""

    index: int
    vectors: np.ndarray  # (n_tokens, dim) float32
    input_index: int | None = None
    page: int | None = None
    image_grid: tuple[int, int] | None = None
    image_token_span: tuple[int, int] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class JobStatus:
    id: str
    status: str
    completed: int
    total: int
    error: str | None = None

    @property
    def done(self) -> bool:
        return self.status in TERMINAL


def base_url(server: str) -> str:
    """``http://host:port`` from a URL given with or without ``/v1``."""
    url = server.strip().rstrip("/")
    if "://" not in url:
        url = "http://" + url
    return url[: -len("/v1")] if url.endswith("/v1") else url


# The server's rows_cols pooling (``"pooling": {"method": "rows_cols"}``): these come back
# beside each page's vectors, encoded like them.
POOLED_FIELDS = ("pooled_rows", "pooled_columns")


def _matrix(value: Any, shape: list[int] | None) -> np.ndarray:
    if isinstance(value, str):
        flat = np.frombuffer(base64.b64decode(value), dtype="<f4")
        vectors = flat.reshape(shape or [1, flat.size]).astype(np.float32, copy=False)
    else:
        vectors = np.asarray(value, dtype=np.float32)
    return vectors[None, :] if vectors.ndim == 1 else vectors


def decode_item(raw: dict[str, Any]) -> EmbeddingItem:
    vectors = _matrix(raw["embedding"], raw.get("shape"))
    grid, span = raw.get("image_grid"), raw.get("image_token_span")
    known = {"object", "embedding", "index", "shape", "input_index", "page"}
    known |= {"image_grid", "image_token_span"}
    return EmbeddingItem(
        index=int(raw["index"]),
        vectors=vectors,
        input_index=raw.get("input_index"),
        page=raw.get("page"),
        image_grid=(int(grid[0]), int(grid[1])) if grid else None,
        image_token_span=(int(span[0]), int(span[1])) if span else None,
        extra={
            k: _matrix(v, raw.get(f"{k}_shape")) if k in POOLED_FIELDS else v
            for k, v in raw.items()
            if k not in known and not k.endswith("_shape")
        },
    )


def decode_response(body: dict[str, Any]) -> list[EmbeddingItem]:
    items = [decode_item(d) for d in body.get("data", [])]
    return sorted(items, key=lambda it: it.index)


class EmbeddingsClient:
    def __init__(
        self,
        server: str = DEFAULT_SERVER,
        *,
        api_key: str | None = None,
        timeout: float = 300.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = base_url(server)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(
            base_url=self.url, headers=headers, timeout=timeout, transport=transport
        )

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> EmbeddingsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- plumbing ----------------------------------------------------------------------------
    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            resp = self.http.request(method, path, **kwargs)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise ServerUnreachable(
                f"cannot reach the embeddings server at {self.url} ({exc}); {start_hint(self.url)}"
            ) from None
        except httpx.TimeoutException as exc:
            raise ServerError(f"{method} {self.url}{path} timed out ({exc})") from None
        if resp.status_code == 401:
            raise ServerError(
                f"{method} {path}: {error_message(resp)}; give the server's key with --api-key",
                401,
            )
        if resp.status_code >= 400:
            raise ServerError(f"{method} {path}: {error_message(resp)}", resp.status_code)
        return resp

    # ---- API ---------------------------------------------------------------------------------
    def model_id(self) -> str:
        """The served model id (``GET /v1/models`` ``data[0].id``)."""
        data = self._request("GET", "/v1/models").json().get("data") or []
        if not data:
            raise ServerError(f"{self.url}/v1/models lists no model")
        return str(data[0]["id"])

    def embed(self, inputs: Sequence[Any] | str, model: str) -> list[EmbeddingItem]:
        """Synchronous ``POST /v1/embeddings`` (base64 floats)."""
        body = {"model": model, "input": inputs, "encoding_format": "base64"}
        return decode_response(self._request("POST", "/v1/embeddings", json=body).json())

    def submit_job(
        self, inputs: Sequence[Any], model: str, pooling: dict[str, Any] | None = None
    ) -> JobStatus:
        body: dict[str, Any] = {"model": model, "input": list(inputs), "encoding_format": "base64"}
        if pooling is not None:
            body["pooling"] = pooling
        try:
            resp = self._request("POST", "/v1/embeddings/jobs", json=body)
        except ServerError as exc:
            if exc.status in (404, 405):
                raise ServerError(
                    f"{self.url} has no jobs API (POST /v1/embeddings/jobs answered "
                    f"{exc.status}); update the server",
                    exc.status,
                ) from None
            raise
        return job_status(resp.json())

    def job(self, job_id: str) -> JobStatus:
        return job_status(self._request("GET", f"/v1/embeddings/jobs/{job_id}").json())

    def job_result(self, job_id: str) -> list[EmbeddingItem]:
        resp = self._request("GET", f"/v1/embeddings/jobs/{job_id}/result")
        return decode_response(resp.json())

    def cancel_job(self, job_id: str) -> None:
        try:
            self._request("DELETE", f"/v1/embeddings/jobs/{job_id}")
        except ServerError:
            pass  # already gone or finished: nothing to cancel

    def wait_job(
        self,
        job_id: str,
        *,
        on_progress: Callable[[JobStatus], None] | None = None,
        poll: float = 0.25,
        max_poll: float = 2.0,
    ) -> list[EmbeddingItem]:
        """Poll until the job ends; its items, or JobFailed with the job's error message."""
        delay = poll
        while True:
            status = self.job(job_id)
            if on_progress is not None:
                on_progress(status)
            if status.done:
                return self.finish(status)
            time.sleep(delay)
            delay = min(delay * 1.5, max_poll)

    def finish(self, status: JobStatus) -> list[EmbeddingItem]:
        if status.status == "succeeded":
            return self.job_result(status.id)
        if status.status == "cancelled":
            raise JobFailed(f"job {status.id} was cancelled")
        raise JobFailed(f"job {status.id} failed: {status.error or 'no error message'}")


def job_status(body: dict[str, Any]) -> JobStatus:
    progress = body.get("progress") or {}
    error = body.get("error")
    if isinstance(error, dict):
        error = error.get("message") or str(error)
    return JobStatus(
        id=str(body["id"]),
        status=str(body.get("status", "queued")),
        completed=int(progress.get("completed") or 0),
        total=int(progress.get("total") or 0),
        error=str(error) if error else None,
    )


def error_message(resp: httpx.Response) -> str:
    """The OpenAI-style ``error.message`` of a response, else its status and text."""
    try:
        body = resp.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        msg = body["error"].get("message")
        if msg:
            return f"{resp.status_code} {msg}"
    text = resp.text.strip()
    return f"{resp.status_code} {resp.reason_phrase}" + (f": {text[:300]}" if text else "")
