"""The error answers every route documents: a :class:`protocol.api.Problem`."""

from __future__ import annotations

from typing import Any

from protocol.api import Problem

_DOC = {
    400: "malformed input",
    401: "no or unknown token",
    403: "not allowed",
    404: "not found",
    409: "conflicts with what the server holds",
    413: "too large",
    422: "invalid request",
    503: "retry later",
}
PROBLEMS: dict[int | str, dict[str, Any]] = {
    status: {"model": Problem, "description": text} for status, text in _DOC.items()
}
