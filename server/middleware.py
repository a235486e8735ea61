"""Pure ASGI middleware: server time on every response, body size limits, the database scope.

They are plain ASGI callables (not ``BaseHTTPMiddleware``) so that streamed bodies stay
streamed and the tortoise context reaches the route in the same task.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from protocol.api import TIME_HEADER, Problem
from server.errors import TooLargeError
from server.services import Services

ServicesRef = Callable[[], Services | None]
_MEDIA_PUT = re.compile(r"^/api/v1/devices/[^/]+/media/[^/]+$")


class ServerTimeHeader:
    """Adds ``X-Unbroken-Time`` (server µs) to every HTTP response."""

    def __init__(self, app: ASGIApp, clock: Callable[[], int]) -> None:
        self.app = app
        self.clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_time(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((TIME_HEADER.lower().encode(), str(self.clock()).encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_time)


class BodyLimit:
    """Refuses bodies over the limit: by Content-Length at once, else while streaming."""

    def __init__(self, app: ASGIApp, limit: int, media_limit: int) -> None:
        self.app = app
        self.limit = limit
        self.media_limit = media_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        media = scope["method"] == "PUT" and bool(_MEDIA_PUT.match(scope["path"]))
        limit = self.media_limit if media else self.limit
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _problem(send, 413, "too_large", f"the body exceeds the limit of {limit} bytes")
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise TooLargeError(f"the body exceeds the limit of {limit} bytes")
            return message

        await self.app(scope, counted, send)


class DatabaseScope:
    """Makes the app's database the one tortoise models use while a request runs."""

    def __init__(self, app: ASGIApp, services: ServicesRef) -> None:
        self.app = app
        self.services = services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        services = self.services() if scope["type"] == "http" else None
        if services is None:
            await self.app(scope, receive, send)
            return
        with services.db.active():
            await self.app(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _problem(send: Send, status: int, code: str, message: str) -> None:
    body = Problem(code=code, message=message).model_dump_json().encode()
    headers: list[Any] = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
