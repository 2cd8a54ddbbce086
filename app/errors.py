"""Every error the service answers with. Each class carries its HTTP status and its OpenAI
error ``type`` and ``code``; raise one anywhere (engine, media, cache, jobs) and the HTTP layer
answers ``{"error": {"message", "type", "param", "code"}}`` with that status.

Errors that cross Redis (a worker failed a job item) travel as :func:`error_record` and come
back as the same class through :func:`rebuild_error` (one name -> class map, filled by
``__init_subclass__``).
"""

from __future__ import annotations

from typing import ClassVar

_BY_NAME: dict[str, type[ApiError]] = {}


class ApiError(Exception):
    """Base of all errors answered to a client. ``param`` names the offending field."""

    status: ClassVar[int] = 500
    error_type: ClassVar[str] = "server_error"
    code: ClassVar[str | None] = "internal_error"

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        _BY_NAME[cls.__name__] = cls

    def __init__(
        self, message: str, param: str | None = None, *, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict:
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }

    def with_param(self, param: str) -> ApiError:
        """The same error, pointed at ``param`` (used when an item error is tied to input[i])."""
        self.param = param
        return self


class InvalidRequest(ApiError):
    status, code, error_type = 400, None, "invalid_request_error"


class InputTooLong(InvalidRequest):
    code = "context_length_exceeded"


class InvalidTokenIds(InvalidRequest):
    code = "invalid_token_ids"


class UnsupportedInput(InvalidRequest):
    code = "unsupported_input"


class MediaError(InvalidRequest):
    code = "invalid_media"


class MediaFetchRefused(MediaError):
    code = "media_fetch_refused"


class Unauthorized(ApiError):
    status, code, error_type = 401, "invalid_api_key", "authentication_error"


class NotFound(ApiError):
    status, code, error_type = 404, "not_found", "invalid_request_error"


class ModelNotFound(NotFound):
    code = "model_not_found"


class JobNotFound(NotFound):
    code = "job_not_found"


class FileNotFound(NotFound):
    code = "file_not_found"


class BatchNotFound(NotFound):
    code = "batch_not_found"


class MethodNotAllowed(ApiError):
    status, code, error_type = 405, "method_not_allowed", "invalid_request_error"


class JobNotFinished(ApiError):
    status, code, error_type = 409, "job_not_finished", "invalid_request_error"


class JobCancelled(ApiError):
    """A question about a job that was cancelled (its result will never exist)."""

    status, code, error_type = 409, "job_cancelled", "invalid_request_error"


class PayloadTooLarge(ApiError):
    status, code, error_type = 413, "payload_too_large", "invalid_request_error"


class UriTooLong(ApiError):
    status, code, error_type = 414, "uri_too_long", "invalid_request_error"


class UnsupportedMediaType(ApiError):
    status, code, error_type = 415, "unsupported_media_type", "invalid_request_error"


class HeadersTooLarge(ApiError):
    status, code, error_type = 431, "headers_too_large", "invalid_request_error"


class InternalError(ApiError):
    status, code, error_type = 500, "internal_error", "server_error"


class JobFailed(ApiError):
    status, code, error_type = 500, "job_failed", "server_error"


class Overloaded(ApiError):
    status, code, error_type = 503, "overloaded", "server_error"


class ModelNotReady(ApiError):
    status, code, error_type = 503, "model_not_ready", "server_error"


class QueueUnavailable(ApiError):
    status, code, error_type = 503, "queue_unavailable", "server_error"


class JobTimeout(ApiError):
    status, code, error_type = 504, "job_timeout", "server_error"


class HttpStatusError(ApiError):
    """A protocol-level error Sanic raised with a status no class above names (408, ...)."""

    code = None

    def __init__(self, message: str, status: int, headers: dict[str, str] | None = None):
        super().__init__(message, headers=headers)
        self.status = status  # type: ignore[misc]
        self.error_type = "invalid_request_error" if status < 500 else "server_error"  # type: ignore[misc]


def error_record(exc: ApiError) -> dict:
    """An error as stored with a job: the OpenAI body plus the class name to rebuild it."""
    return {**exc.body(), "class": type(exc).__name__}


def rebuild_error(record: dict) -> ApiError:
    """The ApiError of a stored record: by class name, else by its code, else InternalError."""
    err = record.get("error", {}) if isinstance(record, dict) else {}
    message, param = err.get("message", "") or "internal error", err.get("param")
    cls = _BY_NAME.get(str(record.get("class", "")))
    if cls is None or cls is HttpStatusError:
        code = err.get("code")
        cls = next((c for c in _BY_NAME.values() if code and c.code == code), InternalError)
    return cls(message, param)
