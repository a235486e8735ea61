"""Scenarios with their ``server`` steps: the operator acts through the admin API of an
in-process server while the real agent records on simulated hardware (scaled time: the
embedded database works in a thread)."""

from __future__ import annotations

from pathlib import Path

import httpx

from protocol.api import API_PREFIX
from server.run import embedded
from server.settings import Settings
from simulator.clock import Timeline, run
from simulator.operator import Operator
from simulator.play import ScenarioResult, play
from simulator.runner import DeviceSpec, SimulatedDevice
from simulator.scenario import parse

# The lost-device scenario of simulator/scenarios/lost_device.toml, in minutes not hours.
LOST = """
name = "lost_device_short"
title = "A lost device is revoked"
duration = "70s"

[device]
camera_mode = "replay"

[[step]]
at = "0s"
do = "hold"
button = "record"

[[step]]
at = "20s"
do = "lose"

[[step]]
at = "30s"
do = "server"
action = "revoke"
reason = "lost"

[[step]]
at = "35s"
do = "server"
action = "legal_hold"
reason = "obstruction_of_officer"

[[step]]
at = "40s"
do = "network_clear"

[expect]
authentic = true
revoked = true
legal_hold = "obstruction_of_officer"
"""


async def _play_lost(tmp: Path) -> tuple[ScenarioResult, dict[str, object], int]:
    timeline = Timeline()
    async with embedded(Settings(data=tmp / "server"), clock=timeline.wall) as server:
        name = "sim-lost-1"

        def transport() -> httpx.AsyncBaseTransport:
            return httpx.ASGITransport(app=server.app)

        spec = DeviceSpec(
            name,
            tmp / "device",
            seed=5,
            server_url=server.base_url,
            enrolment_token=await server.enrolment_token(name),
            sync_seconds=2.0,
        )
        device = SimulatedDevice(spec, timeline, transport=transport)
        operator = Operator(server.base_url, server.services.admin_token, transport=transport)
        result = await play(parse(LOST), spec.store, device=device, server=operator)
        async with server.admin_client() as admin:
            info = (await admin.get(f"{API_PREFIX}/admin/devices/{name}")).json()
        from server import models

        quarantined = await models.Quarantine.filter(device=name).count()
        return result, info, quarantined


def test_lost_device_is_revoked_and_later_uploads_are_quarantined(tmp_path: Path) -> None:
    result, info, quarantined = run(_play_lost(tmp_path), speed=10)
    assert result.passed, result.problems
    assert info["revoked"] is not None
    assert info["revoked_reason"] == "lost"
    # What it recorded while lost reached the server only after the revocation: kept apart,
    # not logged, not dropped.
    assert quarantined > 0
    assert info["next_seq"] > 0  # what it uploaded before the loss stays in the chain
    # The server offers no legal hold yet: said, never passed silently.
    assert any("legal_hold" in s for s in result.skipped), result.skipped
    assert any("legal hold" in s for s in result.skipped), result.skipped
    assert not any("revoke" in s for s in result.skipped), result.skipped
