"""The pre-shift self-check (R-DEV-1): camera, battery, storage and clock, pass or fail each.

Going on duty after a failed item is allowed; the result is a record in the chain and an
announcement, so the failure is on file either way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agent.config import AgentConfig
from hardware.base import Board


@dataclass(frozen=True, slots=True)
class CheckItem:
    """One item of the self-check."""

    name: str
    passed: bool
    detail: str

    def to_cbor(self) -> dict[str, Any]:
        """As recorded."""
        return {"passed": self.passed, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class SelfCheck:
    """All items; ``passed`` only if every item passed."""

    items: tuple[CheckItem, ...]

    @property
    def passed(self) -> bool:
        """Every item passed."""
        return all(i.passed for i in self.items)

    def body(self) -> dict[str, Any]:
        """The self_check record body."""
        return {"passed": self.passed, "items": {i.name: i.to_cbor() for i in self.items}}


def run_self_check(
    board: Board,
    config: AgentConfig,
    *,
    frames_seen: int,
    releasable: int,
    clock_offset_us: int | None,
) -> SelfCheck:
    """Check each item against the shift ahead."""
    camera = CheckItem("camera", frames_seen > 0, f"{frames_seen} frames in the check window")

    battery = board.battery.read()
    need = min(100.0, config.shift_hours * config.battery_percent_per_hour)
    power = CheckItem(
        "battery",
        battery.charging or battery.percent >= need,
        f"{battery.percent:.0f}% (shift needs {need:.0f}%)"
        + (", charging" if battery.charging else ""),
    )

    state = board.storage.state()
    bitrate = board.camera.config.bitrate + 64_000  # video and audio
    shift_bytes = int(config.shift_seconds * bitrate / 8 * 1.05)
    room = state.free + releasable
    storage = CheckItem(
        "storage",
        state.healthy and not state.read_only and room >= shift_bytes,
        f"{room / 1e9:.2f} GB available, shift needs {shift_bytes / 1e9:.2f} GB"
        + ("" if state.healthy else ", medium unhealthy")
        + (", read-only" if state.read_only else ""),
    )

    status = board.clock.status()
    offset = status.offset if clock_offset_us is None else clock_offset_us
    limit = int(config.clock_offset_threshold_s * 1e6)
    clock = CheckItem(
        "clock",
        abs(offset) <= limit and (status.synced or clock_offset_us is not None),
        f"offset {offset / 1e6:+.3f} s (limit {config.clock_offset_threshold_s} s),"
        f" source {status.source.value}, {'synced' if status.synced else 'unsynced'}",
    )
    return SelfCheck((camera, power, storage, clock))
