"""One contract for every hardware backend: the simulator always, the Pi on a Pi.

Each check is a coroutine run on the backend's own loop: the simulator's virtual loop (so
the checks are fast), or a plain asyncio loop on real hardware. The Pi backend runs only
with the ``hardware`` marker on a Pi with picamera2 and a camera (``pytest -m hardware``).
"""

from __future__ import annotations

import asyncio
import errno
import importlib.util
import os
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from hardware.base import (
    Board,
    ButtonName,
    LedPattern,
    MediaPacket,
    PacketKind,
    Prompt,
    StorageError,
)

Check = Callable[[Board], Awaitable[None]]


def _on_a_pi() -> bool:
    return importlib.util.find_spec("picamera2") is not None and os.path.exists("/dev/video0")


def _simulator(tmp_path: Path, check: Check) -> None:
    from simulator.board import simulated_board
    from simulator.clock import SimClock, Timeline, run

    async def main() -> None:
        board = simulated_board("contract", tmp_path / "store", SimClock(Timeline()))
        try:
            await check(board)
        finally:
            board.close()

    run(main())


def _pi(tmp_path: Path, check: Check) -> None:
    from hardware.backends import load_board

    async def main() -> None:
        board = load_board("pi", store=tmp_path / "store", loop=asyncio.get_running_loop())
        await check(board)

    asyncio.run(main())


BACKENDS = [
    pytest.param(_simulator, id="simulator"),
    pytest.param(
        _pi,
        id="pi",
        marks=[
            pytest.mark.hardware,
            pytest.mark.skipif(not _on_a_pi(), reason="needs a Raspberry Pi with a camera"),
        ],
    ),
]


@pytest.fixture(params=BACKENDS)
def on_board(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[Check], None]:
    backend = request.param
    return lambda check: backend(tmp_path, check)


def contract(fn: Callable[[Board], Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Turn ``async def check(board)`` into a test over every backend."""

    def test(on_board: Callable[[Check], None]) -> None:
        on_board(fn)

    test.__name__ = fn.__name__
    test.__doc__ = fn.__doc__
    return test


@contract
async def test_camera_delivers_keyframes_and_rising_timestamps(board: Board) -> None:
    """Annex B access units, a keyframe within two intervals, monotonic capture times."""
    packets: list[MediaPacket] = []
    loop = asyncio.get_running_loop()
    await board.camera.start(packets.append)
    interval = board.camera.config.keyframe_interval / board.camera.config.fps
    await board.clock.sleep(2 * interval + 0.5)
    await board.camera.stop()
    count = len(packets)
    await board.clock.sleep(0.5)
    assert len(packets) == count, "no packets after stop()"
    video = [p for p in packets if p.kind is PacketKind.VIDEO]
    assert video, "no video"
    assert any(p.keyframe for p in video)
    assert all(p.data.startswith((b"\x00\x00\x00\x01", b"\x00\x00\x01")) for p in video)
    monos = [p.mono for p in video]
    assert monos == sorted(monos)
    assert asyncio.get_running_loop() is loop


@contract
async def test_still_is_a_jpeg(board: Board) -> None:
    """A photo while recording."""
    await board.camera.start(lambda p: None)
    try:
        data = await board.camera.still()
    finally:
        await board.camera.stop()
    assert data[:2] == b"\xff\xd8"
    assert data[-2:] == b"\xff\xd9"


@contract
async def test_clock_mono_never_goes_back_and_sleep_waits(board: Board) -> None:
    """Monotonic time advances by at least what sleep() was asked."""
    m0 = board.clock.mono()
    await board.clock.sleep(0.2)
    m1 = board.clock.mono()
    assert m1 - m0 >= 190_000
    assert board.clock.wall() > 1_600_000_000_000_000
    status = board.clock.status()
    assert isinstance(status.offset, int)


@contract
async def test_battery_reading_is_in_range(board: Board) -> None:
    """Percent 0-100 and a plausible 1-cell voltage."""
    state = board.battery.read()
    assert 0 <= state.percent <= 100
    assert 2500 <= state.voltage_mv <= 4500


@contract
async def test_storage_durable_primitives(board: Board) -> None:
    """write_new, append, rename, sync_dir, read, read_range, size, listdir, release."""
    s = board.storage
    s.makedirs("contract/tmp")
    s.makedirs("contract/media")
    s.write_new("contract/tmp/a", b"segment")
    with pytest.raises(StorageError) as info:
        s.write_new("contract/tmp/a", b"again")
    assert info.value.errno == errno.EEXIST
    s.rename("contract/tmp/a", "contract/media/a")
    s.sync_dir("contract/media")
    s.append("contract/journal", b"one")
    s.append("contract/journal", b"two")
    assert s.read("contract/journal") == b"onetwo"
    assert s.read_range("contract/journal", 2, 3) == b"etw"
    assert s.read_range("contract/journal", 4, 10) == b"wo"  # fewer at the end
    assert s.size("contract/media/a") == 7
    assert s.size("contract/missing") is None
    assert s.listdir("contract/media") == ["a"]
    assert s.listdir("contract/none") == []
    s.write_new("contract/tmp/b", b"x")
    with pytest.raises(StorageError):
        s.rename("contract/tmp/b", "contract/media/a")  # target exists
    s.release("contract/media/a")
    assert s.size("contract/media/a") is None
    state = s.state()
    assert 0 <= state.free <= state.total
    assert s.local_path() is not None


@contract
async def test_indicator_and_speaker(board: Board) -> None:
    """Every pattern can be shown and read back; every prompt plays."""
    for pattern in LedPattern:
        board.indicator.show(pattern)
        assert board.indicator.pattern is pattern
    for prompt in (Prompt.RECORDING_STARTED, Prompt.FAULT):
        await board.speaker.play(prompt)


@contract
async def test_buttons_accept_callbacks(board: Board) -> None:
    """Callbacks can be bound to every button."""
    for name in ButtonName:
        board.buttons.on_press(name, lambda: None)
        board.buttons.on_hold(name, lambda: None)


@contract
async def test_network_state(board: Board) -> None:
    """The link reports up or down and a kind."""
    state = board.network.state()
    assert isinstance(state.up, bool)
    assert state.kind
