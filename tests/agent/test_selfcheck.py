"""The pre-shift self-check (R-DEV-1): each item passes or fails on the simulated hardware,
the result is a signed record, and going on duty after a failure is allowed and flagged."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent.config import AgentConfig
from agent.selfcheck import SelfCheck, run_self_check
from hardware.base import LedPattern
from protocol import layout
from protocol.events import Event
from protocol.journal import JournalScan
from protocol.record import Record, RecordKind, SignedRecord
from protocol.verify import verify_path
from simulator.board import SimulatedBoard, simulated_board
from simulator.clock import SimClock, Timeline, run
from simulator.runner import DeviceSpec, SimulatedDevice


def _board(tmp_path: Path, **options: Any) -> SimulatedBoard:
    # Built on the running loop: button callbacks are delivered there.
    return simulated_board("cam-check", tmp_path, SimClock(Timeline()), 1, **options)


def _check(board: SimulatedBoard, frames: int = 25, offset: int | None = None) -> SelfCheck:
    config = AgentConfig(device_id="cam-check", store=Path("unused"))
    return run_self_check(board, config, frames_seen=frames, releasable=0, clock_offset_us=offset)


def _failed(check: SelfCheck) -> set[str]:
    return {i.name for i in check.items if not i.passed}


async def test_a_healthy_device_passes_every_item(tmp_path: Path) -> None:
    check = _check(_board(tmp_path))
    assert [i.name for i in check.items] == ["camera", "battery", "storage", "clock"]
    assert check.passed, check.body()
    assert check.body()["passed"] is True


@pytest.mark.parametrize(
    ("fault", "item"),
    [
        ("no_frames", "camera"),
        ("battery", "battery"),
        ("small_card", "storage"),
        ("read_only", "storage"),
        ("clock_offset", "clock"),
        ("no_ntp", "clock"),
    ],
)
async def test_each_fault_fails_its_own_item(tmp_path: Path, fault: str, item: str) -> None:
    board = _board(tmp_path)
    frames, offset = 25, None
    match fault:
        case "no_frames":
            frames = 0
        case "battery":
            board.battery.inject_percent(30.0)  # an 8-hour shift needs 72 %
        case "small_card":
            board.storage.inject_capacity(50_000_000)
        case "read_only":
            board.storage.inject_read_only()
        case "clock_offset":
            offset = 5_000_000  # 5 s against the server, limit 2 s
        case "no_ntp":
            board.clock.inject_ntp(False)
    check = _check(board, frames, offset)
    assert _failed(check) == {item}, check.body()
    assert not check.passed
    assert check.body()["items"][item]["passed"] is False
    assert check.body()["items"][item]["detail"]


async def test_charging_battery_passes_however_low(tmp_path: Path) -> None:
    board = _board(tmp_path)
    board.battery.inject_percent(10.0)
    board.battery.inject_charging(True)
    assert "battery" not in _failed(_check(board))


def _records(store: Path) -> list[Record]:
    out = []
    for name in sorted((store / layout.JOURNAL_DIR).iterdir()):
        with name.open("rb") as f:
            out.extend(
                SignedRecord.parse(item).record for item in JournalScan(f, name.name).items()
            )
    return sorted(out, key=lambda r: r.seq)


def test_duty_after_a_failed_check_is_allowed_recorded_and_shown(tmp_path: Path) -> None:
    store = tmp_path / "store"

    async def main() -> tuple[list[LedPattern], bool]:
        # A broker that never answers: announcements wait in the on-disk outbox.
        spec = DeviceSpec("cam-low", store, seed=2, mqtt_url="mqtt://127.0.0.1:9")
        device = SimulatedDevice(spec, Timeline())
        await device.enrol()  # the board exists: drain the battery before power-on
        assert device.board is not None
        device.board.battery.inject_percent(20.0)
        shown: list[LedPattern] = []
        indicator = device.board.indicator
        original = indicator.show

        def spy(pattern: LedPattern) -> None:
            shown.append(pattern)
            original(pattern)

        indicator.show = spy  # type: ignore[method-assign]
        agent = await device.boot()
        await device.timeline.sleep(5)
        on_duty = agent.on_duty
        await device.stop()
        return shown, on_duty

    shown, on_duty = run(main())
    assert on_duty  # allowed
    assert LedPattern.FAULT in shown  # shown on the device before recording
    records = _records(store)
    checks = [r for r in records if r.kind is RecordKind.SELF_CHECK]
    assert checks, [r.kind for r in records]
    body = checks[0].body
    assert body["passed"] is False
    assert body["items"]["battery"]["passed"] is False
    assert body["items"]["camera"]["passed"] is True
    # The check precedes the recording it flags, in the same signed chain.
    first_segment = next(r.seq for r in records if r.kind is RecordKind.SEGMENT)
    assert checks[0].seq < first_segment
    assert verify_path(store).authentic
    # Going on duty is announced with the failed items, for the fleet manager.
    (started,) = (store / "outbox").glob("*-recording_started.cose")
    event, _ = Event.parse(started.read_bytes())
    assert event.body["self_check_failed"] == ["battery"]
