"""Errors of the sync server.

Every error raised by :mod:`server` derives from :class:`ServerError`; third-party errors
(tortoise, botocore, aiomqtt, OS errors of the blob store) are translated at the boundary
with ``raise ... from exc``. Errors that answer an HTTP request carry a status and a stable
code, and reach the client as a :class:`protocol.api.Problem`::

    ServerError
    ├── ConfigError            settings that cannot work (bad URL, unreadable key file)
    ├── StorageError           the blob store failed to read or write durably
    │   └── BlobMissingError   a blob that should exist does not
    ├── ExportError            an export cannot be made (nothing in range, target exists)
    └── RequestError           a request the server refuses (4xx), or cannot take now (503)
        ├── BadRequestError        malformed or out-of-range input (400)
        ├── UnauthorizedError      no or wrong credentials (401)
        ├── ForbiddenError         credentials of another party, or a revoked device (403)
        ├── NotFoundError          unknown device, record or media (404)
        ├── ConflictError          out of order, fork, offset mismatch, token used (409)
        ├── TooLargeError          a body over the size limit (413)
        └── UnavailableError       starting, shutting down or saturated: retry later (503)
"""

from __future__ import annotations


class ServerError(Exception):
    """Base of every error raised by :mod:`server`."""


class ConfigError(ServerError):
    """The settings cannot work."""


class StorageError(ServerError):
    """The blob store failed."""


class BlobMissingError(StorageError):
    """A blob is not in the store."""


class ExportError(ServerError):
    """An export cannot be made."""


class RequestError(ServerError):
    """A refused request: ``status`` and a stable ``code`` for :class:`protocol.api.Problem`."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class BadRequestError(RequestError):
    """Malformed or out-of-range input."""

    status = 400
    code = "bad_request"


class UnauthorizedError(RequestError):
    """No credentials, or credentials nobody issued."""

    status = 401
    code = "unauthorized"


class ForbiddenError(RequestError):
    """Valid credentials that may not do this."""

    status = 403
    code = "forbidden"


class NotFoundError(RequestError):
    """Something the request names does not exist."""

    status = 404
    code = "not_found"


class ConflictError(RequestError):
    """The request contradicts what the server holds."""

    status = 409
    code = "conflict"


class TooLargeError(RequestError):
    """A body over the size limit."""

    status = 413
    code = "too_large"


class UnavailableError(RequestError):
    """The server cannot take the request now; the client retries later."""

    status = 503
    code = "unavailable"
