"""Every error the service can answer with, and the one table that maps it to HTTP.

Raise an ``ApiError`` subclass anywhere (engine, media, cache, jobs); the HTTP layer turns it
into the OpenAI error body ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ErrorKind:
    status: int
    type: str
    code: str | None


# The one table: error class name -> (HTTP status, OpenAI error type, code).
ERROR_TABLE: dict[str, ErrorKind] = {
    "InvalidRequest": ErrorKind(400, "invalid_request_error", None),
    "InputTooLong": ErrorKind(400, "invalid_request_error", "context_length_exceeded"),
    "InvalidTokenIds": ErrorKind(400, "invalid_request_error", "invalid_token_ids"),
    "UnsupportedInput": ErrorKind(400, "invalid_request_error", "unsupported_input"),
    "MediaError": ErrorKind(400, "invalid_request_error", "invalid_media"),
    "MediaFetchRefused": ErrorKind(400, "invalid_request_error", "media_fetch_refused"),
    "Unauthorized": ErrorKind(401, "authentication_error", "invalid_api_key"),
    "ModelNotFound": ErrorKind(404, "invalid_request_error", "model_not_found"),
    "NotFound": ErrorKind(404, "invalid_request_error", "not_found"),
    "JobNotFound": ErrorKind(404, "invalid_request_error", "job_not_found"),
    "MethodNotAllowed": ErrorKind(405, "invalid_request_error", "method_not_allowed"),
    "JobNotFinished": ErrorKind(409, "invalid_request_error", "job_not_finished"),
    "PayloadTooLarge": ErrorKind(413, "invalid_request_error", "payload_too_large"),
    "UnsupportedMediaType": ErrorKind(415, "invalid_request_error", "unsupported_media_type"),
    "Overloaded": ErrorKind(503, "server_error", "overloaded"),
    "ModelNotReady": ErrorKind(503, "server_error", "model_not_ready"),
    "QueueUnavailable": ErrorKind(503, "server_error", "queue_unavailable"),
    "JobTimeout": ErrorKind(504, "server_error", "job_timeout"),
    "JobFailed": ErrorKind(500, "server_error", "job_failed"),
    "InternalError": ErrorKind(500, "server_error", "internal_error"),
}


class ApiError(Exception):
    """Base of all errors answered to a client. ``param`` names the offending field."""

    def __init__(
        self,
        message: str,
        param: str | None = None,
        *,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.headers = headers or {}

    @property
    def kind(self) -> ErrorKind:
        for cls in type(self).__mro__:
            kind = ERROR_TABLE.get(cls.__name__)
            if kind is not None:
                return kind
        return ERROR_TABLE["InternalError"]

    @property
    def status(self) -> int:
        return self.kind.status

    def body(self) -> dict:
        kind = self.kind
        return {
            "error": {
                "message": self.message,
                "type": kind.type,
                "param": self.param,
                "code": kind.code,
            }
        }

    def with_param(self, param: str) -> ApiError:
        """The same error, pointed at ``param`` (used when an item error is tied to input[i])."""
        self.param = param
        return self


class InvalidRequest(ApiError):
    pass


class InputTooLong(InvalidRequest):
    pass


class InvalidTokenIds(InvalidRequest):
    pass


class UnsupportedInput(InvalidRequest):
    pass


class MediaError(InvalidRequest):
    pass


class MediaFetchRefused(MediaError):
    pass


class Unauthorized(ApiError):
    pass


class ModelNotFound(ApiError):
    pass


class NotFound(ApiError):
    pass


class JobNotFound(NotFound):
    pass


class MethodNotAllowed(ApiError):
    pass


class JobNotFinished(ApiError):
    pass


class PayloadTooLarge(ApiError):
    pass


class UnsupportedMediaType(ApiError):
    pass


class Overloaded(ApiError):
    pass


class ModelNotReady(ApiError):
    pass


class QueueUnavailable(ApiError):
    pass


class JobTimeout(ApiError):
    pass


class JobFailed(ApiError):
    pass


class InternalError(ApiError):
    pass


def error_record(exc: ApiError) -> dict:
    """An error as stored with a job: the OpenAI body plus the class name to rebuild it."""
    return {**exc.body(), "class": type(exc).__name__}


def rebuild_error(record: dict) -> ApiError:
    """The ApiError of a stored record: by class name, else by its code, else InternalError."""
    err = record.get("error", {}) if isinstance(record, dict) else {}
    message, param = err.get("message", ""), err.get("param")
    cls = globals().get(str(record.get("class", "")))
    if isinstance(cls, type) and issubclass(cls, ApiError):
        return cls(message, param)
    code = err.get("code")
    for name, kind in ERROR_TABLE.items():
        if code is not None and kind.code == code:
            return globals()[name](message, param)
    return InternalError(message or "internal error", param)
