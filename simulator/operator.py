"""The server operator of a scenario: plays ``server`` steps through the admin HTTP API.

A scenario's ``server`` steps are what a fleet administrator does on the server while the
device records (revoke a lost device, put evidence on legal hold). :class:`Operator` does
them over HTTP with the admin token, as a person at the console would, so a scenario can
be played against any server: the demo's, a test's in-process one, a real deployment.
An action this server does not offer raises :class:`UnsupportedStepError`; the player reports
it as skipped, never as passed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from protocol.api import API_PREFIX
from simulator.runner import SimulatedDevice
from simulator.scenario import Server

#: Server actions not offered yet, with the reason given when a scenario asks for one.
NOT_OFFERED = {
    "legal_hold": "this server has no legal hold yet (evidence governance is a later issue)",
}


class UnsupportedStepError(Exception):
    """The server does not offer a scenario's server action."""


class OperatorError(Exception):
    """The server refused an operator action."""


class Operator:
    """Does a scenario's ``server`` steps through the admin API of the server at ``base_url``."""

    def __init__(
        self,
        base_url: str,
        admin_token: str,
        transport: Callable[[], httpx.AsyncBaseTransport] | None = None,
        actor: str = "scenario operator",
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.admin_token = admin_token
        self.transport = transport
        self.actor = actor
        self.done: list[tuple[str, str]] = []

    def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.base_url,
            transport=self.transport() if self.transport else None,
            headers={"authorization": f"Bearer {self.admin_token}"},
            timeout=30,
        )

    async def __call__(self, device: SimulatedDevice, step: Server) -> None:
        """Perform ``step`` for ``device``."""
        name = device.spec.device_id
        if step.action in NOT_OFFERED:
            raise UnsupportedStepError(NOT_OFFERED[step.action])
        match step.action:
            case "revoke":
                reason = str(step.args.get("reason") or step.note or "revoked in a scenario")
                await self._post(f"/admin/devices/{name}/revoke", {"reason": reason[:500]})
            case "check_out" | "check_in":
                await self.custody(device, step.action, step.args.get("officer"))
            case _:
                raise UnsupportedStepError(f"unknown server action {step.action!r}")
        self.done.append((name, step.action))

    async def custody(
        self, device: SimulatedDevice, action: str, officer: str | None = None
    ) -> None:
        """Check ``device`` out to its officer (``check_out``) or back in (``check_in``)."""
        await self._post(
            f"/admin/devices/{device.spec.device_id}/custody",
            {
                "action": action,
                "officer": officer or device.spec.officer or "officer",
                "actor": self.actor,
            },
        )

    async def _post(self, path: str, body: dict[str, Any]) -> None:
        async with self._client() as client:
            answer = await client.post(API_PREFIX + path, json=body)
        if answer.status_code != 200:
            raise OperatorError(f"POST {path}: HTTP {answer.status_code} {answer.text[:300]}")

    async def device(self, name: str) -> dict[str, Any]:
        """The server's registry entry of ``name``."""
        async with self._client() as client:
            answer = await client.get(f"{API_PREFIX}/admin/devices/{name}")
        if answer.status_code != 200:
            raise OperatorError(f"device {name}: HTTP {answer.status_code} {answer.text[:300]}")
        info: dict[str, Any] = answer.json()
        return info
