"""Simulated fleets: many devices on one timeline, each a real agent, and their settling.

A device is *settled* when the server holds a receipt for every record and every piece of
media it recorded; :func:`settle` syncs a stopped device until then (or gives up).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import httpx

from agent.capture.store import EvidenceStore
from agent.errors import SyncError
from agent.sync import Syncer
from protocol.checkpoint import ReceiptKind
from simulator.runner import SimulatedDevice

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DeviceOutcome:
    """What one simulated device did, seen from the device."""

    device: str
    records: int
    segments: int
    unreceipted_records: int
    unreceipted_media: int
    battery_pct: float
    storage_free_bytes: int
    clock_offset_ms: float
    boots: int
    failures: int

    @property
    def settled(self) -> bool:
        """Everything recorded has a server receipt."""
        return self.unreceipted_records == 0 and self.unreceipted_media == 0


def outcome(device: SimulatedDevice) -> DeviceOutcome:
    """Count what a stopped device holds and what the server acknowledged."""
    assert device.board is not None
    assert device.agent is not None
    store = device.agent.store
    next_seq = device.agent.writer.next_seq
    unreceipted = sum(
        1 for seq in range(next_seq) if not store.has_receipt(seq, ReceiptKind.RECORD)
    )
    media = store.unreceipted_media()
    battery = device.board.battery.read()
    segments = device.agent.recorder.segments_written
    return DeviceOutcome(
        device=device.spec.device_id,
        records=next_seq,
        segments=segments,
        unreceipted_records=unreceipted if device.spec.server_url else 0,
        unreceipted_media=len(media) if device.spec.server_url else 0,
        battery_pct=round(battery.percent, 1),
        storage_free_bytes=device.board.storage.state().free,
        clock_offset_ms=round(device.agent.best_offset() / 1000, 3),
        boots=device.boots,
        failures=len(device.failures),
    )


async def settle(device: SimulatedDevice, *, attempts: int = 10) -> DeviceOutcome:
    """Sync a stopped device until the server has receipted everything (or attempts run out)."""
    agent = device.agent
    if agent is None or not device.spec.server_url:
        return outcome(device)
    for attempt in range(attempts):
        current = outcome(device)
        if current.settled:
            return current
        transport = device.transport() if device.transport else None
        headers = (
            {"authorization": f"Bearer {agent.identity.api_token}"}
            if agent.identity.api_token
            else {}
        )
        async with httpx.AsyncClient(
            base_url=device.spec.server_url, transport=transport, headers=headers, timeout=30
        ) as client:
            store: EvidenceStore = agent.store
            syncer = Syncer(client, agent.identity.device, store, agent.writer, agent.board.clock)
            try:
                await syncer.sync_once()
            except SyncError as exc:
                log.warning(
                    "%s: settling sync %d failed: %s", device.spec.device_id, attempt + 1, exc
                )
                await asyncio.sleep(min(2.0**attempt, 10.0))
    return outcome(device)
