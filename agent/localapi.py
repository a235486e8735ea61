"""The local control API: JSON lines over a Unix socket in the store's ``state/`` folder.

It serves the device's own tools (the ``unbroken ctl`` command, a companion app over
USB). Requests are one JSON object per line, ``{"command": ..., ...}``; each gets one JSON
answer ``{"ok": bool, ...}``. A ``delete`` request is refused like every deletion: it
becomes a ``deletion_refused`` record in the chain and an announcement. The record names
the interface (``cli`` when the request says ``"via": "cli"``, as ``unbroken ctl`` does,
else ``local_api``) and the requester: what the request says, with the user id of the
process at the other end of the socket as the kernel reports it (``uid N``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.errors import AgentError, DeletionRefusedError

if TYPE_CHECKING:
    from agent.runtime import Agent

log = logging.getLogger(__name__)

SOCKET = "state/agent.sock"
MAX_LINE = 64 * 1024
#: Local clients that name themselves in a request (``"via"``) and the interface recorded.
CLIENTS = {"cli": "cli"}


def peer_uid(writer: asyncio.StreamWriter) -> int | None:
    """The user id of the process at the other end of a Unix socket (Linux), else None."""
    sock = writer.get_extra_info("socket")
    option = getattr(socket, "SO_PEERCRED", None)
    if sock is None or option is None:
        return None
    try:
        _pid, uid, _gid = struct.unpack("iII", sock.getsockopt(socket.SOL_SOCKET, option, 12))
    except OSError:
        return None
    return int(uid)


def socket_path(store: Path) -> Path:
    """Where the agent of ``store`` listens."""
    return store / SOCKET


class LocalApi:
    """Serves one agent on a Unix socket (mode 0600)."""

    def __init__(self, agent: Agent, path: Path) -> None:
        self.agent = agent
        self.path = path

    async def run(self) -> None:
        """Listen until cancelled."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # a socket left by a killed agent; not evidence
        server = await asyncio.start_unix_server(self._client, path=str(self.path), limit=MAX_LINE)
        os.chmod(self.path, 0o600)
        async with server:
            await server.serve_forever()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        uid = peer_uid(writer)
        try:
            while line := await reader.readline():
                answer = await self.handle(line, uid)
                writer.write(json.dumps(answer).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            writer.close()

    async def handle(self, line: bytes, uid: int | None = None) -> dict[str, Any]:
        """Answer one request line; ``uid`` is the asking process's user id, if known."""
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ValueError("not an object")
        except ValueError:
            return {"ok": False, "error": "a request is one JSON object per line"}
        command = request.get("command")
        agent = self.agent
        try:
            if command == "status":
                return {
                    "ok": True,
                    "device": agent.identity.device,
                    "on_duty": agent.on_duty,
                    "incident": agent.writer.binding.incident,
                    "next_seq": agent.writer.next_seq,
                    "telemetry": agent.telemetry(),
                }
            if command == "incident_open":
                case = request.get("case")
                incident = await agent.open_incident(str(case) if case else None)
                return {"ok": True, "incident": incident}
            if command == "incident_close":
                await agent.close_incident()
                return {"ok": True}
            if command == "bookmark":
                signed = await agent.bookmark(str(request.get("label", "bookmark")))
                return {"ok": True, "seq": signed.record.seq}
            if command == "photo":
                photo = await agent.photo(str(request.get("label", "")) or None)
                return {"ok": photo is not None, "seq": photo.record.seq if photo else None}
            if command == "duty":
                await (agent.go_on_duty() if request.get("on") else agent.go_off_duty())
                return {"ok": True, "on_duty": agent.on_duty}
            if command == "self_check":
                check = await agent.run_self_check()
                return {
                    "ok": True,
                    "passed": check.passed,
                    "items": {i.name: [i.passed, i.detail] for i in check.items},
                }
            if command == "delete":
                interface = CLIENTS.get(str(request.get("via", "")), "local_api")
                requester = str(request.get("requester", "") or "")
                if uid is not None:
                    requester = f"{requester} (uid {uid})" if requester else f"uid {uid}"
                await agent.refuse_deletion(interface, str(request.get("target", "")), requester)
        except DeletionRefusedError as exc:
            return {"ok": False, "refused": True, "error": str(exc)}
        except AgentError as exc:  # e.g. the store failed: answer, and keep serving
            log.warning("local API %r failed: %s", command, exc)
            return {"ok": False, "error": str(exc)}
        return {"ok": False, "error": f"unknown command {command!r}"}


async def call(store: Path, request: dict[str, Any]) -> dict[str, Any]:
    """Send one request to the agent running on ``store`` (10 s at most)."""
    async with asyncio.timeout(10):
        reader, writer = await asyncio.open_unix_connection(str(socket_path(store)))
        try:
            writer.write(json.dumps(request).encode() + b"\n")
            await writer.drain()
            answer = json.loads(await reader.readline())
        finally:
            writer.close()
    if not isinstance(answer, dict):
        raise ValueError("the agent answered something other than an object")
    return answer
