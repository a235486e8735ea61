"""Running the real agent on simulated hardware: one device, through reboots and power cuts.

This is the only simulator module that imports :mod:`agent` (the fleet runner builds on
it). A :class:`SimulatedDevice` keeps one board and one evidence medium for its whole life;
each boot makes a new :class:`agent.runtime.Agent` on them, as a real device would. A power
cut kills the running agent without cleanup (the medium settles unsynced writes as FAULTS 2
says); power returning starts the next boot, which writes the recovery record.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx

from agent.capture.store import EvidenceStore
from agent.config import AgentConfig
from agent.enrolment import enrol_with_server, load_identity, provision_test_enrolment
from agent.runtime import Agent
from simulator.board import SimulatedBoard, simulated_board
from simulator.clock import SimClock, Timeline

log = logging.getLogger(__name__)

Transport = Callable[[], httpx.AsyncBaseTransport]
"""Makes the HTTP transport to the server (in-process ASGI, or None for real sockets)."""


@dataclass
class DeviceSpec:
    """What a simulated device is."""

    device_id: str
    store: Path
    seed: int = 0
    officer: str | None = None
    server_url: str | None = None
    mqtt_url: str | None = None
    #: "auto" probes for MQTT 5; "3.1.1" for a broker known to lack it (the demo's amqtt).
    mqtt_protocol: Literal["auto", "3.1.1", "5"] = "auto"
    enrolment_token: str | None = None
    segment_seconds: float = 1.0
    telemetry_seconds: float = 30.0
    sync_seconds: float = 5.0
    board: dict[str, Any] = field(default_factory=dict)


class SimulatedDevice:
    """One device: a board that outlives its boots, and the agent of the current boot."""

    def __init__(
        self, spec: DeviceSpec, timeline: Timeline, transport: Transport | None = None
    ) -> None:
        self.spec = spec
        self.timeline = timeline
        self.transport = transport
        self.clock = SimClock(timeline)
        self.board: SimulatedBoard | None = None
        self.agent: Agent | None = None
        self.boots = 0
        self.cuts = 0
        self._task: asyncio.Task[None] | None = None
        self.failures: list[BaseException] = []
        self.duty_at_boot = True

    def config(self) -> AgentConfig:
        """The agent's settings."""
        s = self.spec
        return AgentConfig(
            device_id=s.device_id,
            store=s.store,
            server_url=s.server_url,
            mqtt_url=s.mqtt_url,
            mqtt_protocol=s.mqtt_protocol,
            officer=s.officer,
            segment_seconds=s.segment_seconds,
            preroll_seconds=0,
            telemetry_seconds=s.telemetry_seconds,
            sync_seconds=s.sync_seconds,
            notice_seconds=0,
            duty_at_boot=self.duty_at_boot,
        )

    async def _enrol(self, store: EvidenceStore) -> None:
        s = self.spec
        if store.enrolled():
            return
        if s.server_url and s.enrolment_token:
            transport = self.transport() if self.transport else None
            async with httpx.AsyncClient(
                base_url=s.server_url, transport=transport, timeout=30
            ) as client:
                await enrol_with_server(client, store, s.store, s.device_id, s.enrolment_token)
        else:
            provision_test_enrolment(store, s.store, s.device_id, self.clock.wall())

    def _power_on(self) -> EvidenceStore:
        if self.board is None:
            self.spec.store.mkdir(parents=True, exist_ok=True)
            self.board = simulated_board(
                self.spec.device_id, self.spec.store, self.clock, self.spec.seed, **self.spec.board
            )
            self.board.power.on_cut.append(self._killed)
        elif not self.board.power.on:
            self.board.power.restore()
        return EvidenceStore(self.board.storage)

    async def enrol(self) -> None:
        """Enrol without starting the agent (a fleet manager then checks the device out)."""
        await self._enrol(self._power_on())

    async def boot(self) -> Agent:
        """Power on (first time or after a cut) and start the agent in the background."""
        store = self._power_on()
        assert self.board is not None
        await self._enrol(store)
        identity = load_identity(store, self.spec.store, self.spec.device_id)
        transport = self.transport() if self.transport else None
        self.agent = Agent(self.config(), self.board, store, identity, transport=transport)
        self.agent.local_api = None  # simulated devices are driven in-process
        self.boots += 1
        self._task = asyncio.get_running_loop().create_task(
            self._run(self.agent), name=f"agent:{self.spec.device_id}:{self.boots}"
        )
        ready = asyncio.get_running_loop().create_task(self.agent.wait_ready(), name="agent-ready")
        await asyncio.wait({ready, self._task}, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        return self.agent

    async def _run(self, agent: Agent) -> None:
        try:
            await agent.run()
        except Exception as exc:  # a dying device fails in many ways; keep them for the report
            if self.board is not None and self.board.power.on:
                self.failures.append(exc)
                log.exception("agent of %s failed", self.spec.device_id)

    def _killed(self) -> None:
        if self.agent is not None:
            self.agent.kill()

    async def power_cut(self) -> None:
        """Cut the power now and wait for the agent to be gone."""
        assert self.board is not None
        self.cuts += 1
        self.board.power.cut("simulated power cut")
        await self._wait()

    async def stop(self) -> None:
        """Stop cleanly: the agent closes its session and syncs what it can."""
        if self.agent is not None:
            self.agent.stop()
        await self._wait()
        if self.board is not None:
            self.board.close()

    async def _wait(self) -> None:
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
