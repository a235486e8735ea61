"""The Pi camera adapter's own logic, on a stand-in for picamera2.

The stand-in behaves as picamera2 does towards an output: ``start_recording`` starts an
encoder thread that calls ``output.outputframe(frame, keyframe, timestamp)`` per access
unit, with sensor timestamps in µs. It checks what only our adapter does: the hop to the
event loop, the mapping of sensor time onto the monotonic clock, keyframe flags, nothing
after stop, stills. It is no substitute for the ``hardware`` contract run on a Pi.
"""

from __future__ import annotations

import asyncio
import importlib
import sys
import threading
import time
import types
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

from hardware.base import CameraConfig, MediaPacket, PacketKind

JPEG = b"\xff\xd8 a picture \xff\xd9"


class FakeOutput:
    """picamera2.outputs.Output: the base class our output derives from."""

    def __init__(self, pts: Any = None) -> None:
        self.recording = False


class FakeH264Encoder:
    def __init__(self, bitrate: int | None = None, repeat: bool = False, iperiod: int = 30) -> None:
        self.bitrate, self.repeat, self.iperiod = bitrate, repeat, iperiod


class FakePicamera2:
    """Delivers ``iperiod``-spaced keyframes from a thread named like picamera2's."""

    instances: ClassVar[list[FakePicamera2]] = []
    sensor_base_us = 0  # added to CLOCK_MONOTONIC: another time base if not 0

    def __init__(self) -> None:
        self.config: dict[str, Any] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.thread_ids: set[int] = set()
        self.closed = False
        FakePicamera2.instances.append(self)

    def create_video_configuration(self, **config: Any) -> dict[str, Any]:
        return config

    def configure(self, config: dict[str, Any]) -> None:
        self.config = config

    def start_recording(self, encoder: FakeH264Encoder, output: Any) -> None:
        fps = self.config["controls"]["FrameRate"]

        def encode() -> None:
            n = 0
            while not self._stop.is_set():
                self.thread_ids.add(threading.get_ident())
                stamp = time.monotonic_ns() // 1000 + self.sensor_base_us
                keyframe = n % encoder.iperiod == 0
                au = b"\x00\x00\x00\x01" + (b"\x65" if keyframe else b"\x41") + bytes([n % 256])
                output.outputframe(au, keyframe, stamp)
                n += 1
                self._stop.wait(1 / fps)

        self._thread = threading.Thread(target=encode, name="fake-picamera2-encoder")
        self._thread.start()

    def stop_recording(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def close(self) -> None:
        self.closed = True

    def capture_file(self, buf: Any, format: str = "jpeg") -> None:
        buf.write(JPEG)


@pytest.fixture
def picamera2_stand_in(monkeypatch: pytest.MonkeyPatch) -> Iterator[types.ModuleType]:
    package = types.ModuleType("picamera2")
    package.Picamera2 = FakePicamera2  # type: ignore[attr-defined]
    encoders = types.ModuleType("picamera2.encoders")
    encoders.H264Encoder = FakeH264Encoder  # type: ignore[attr-defined]
    outputs = types.ModuleType("picamera2.outputs")
    outputs.Output = FakeOutput  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "picamera2", package)
    monkeypatch.setitem(sys.modules, "picamera2.encoders", encoders)
    monkeypatch.setitem(sys.modules, "picamera2.outputs", outputs)
    monkeypatch.delitem(sys.modules, "hardware.pi.camera", raising=False)
    FakePicamera2.instances.clear()
    FakePicamera2.sensor_base_us = 0
    module = importlib.import_module("hardware.pi.camera")
    yield module
    sys.modules.pop("hardware.pi.camera", None)  # the next import sees the real picamera2


CONFIG = CameraConfig(fps=50, keyframe_interval=10, audio=False)


async def _record(module: types.ModuleType, seconds: float) -> tuple[Any, list[MediaPacket], set]:
    loop_thread = threading.get_ident()
    seen_threads: set[int] = set()
    packets: list[MediaPacket] = []

    def sink(packet: MediaPacket) -> None:
        seen_threads.add(threading.get_ident())
        packets.append(packet)

    camera = module.PiCamera(CONFIG, microphone=None)
    await camera.start(sink)
    await asyncio.sleep(seconds)
    await camera.stop()
    count = len(packets)
    await asyncio.sleep(0.1)
    assert len(packets) == count, "packets after stop()"
    assert seen_threads == {loop_thread}
    return camera, packets, FakePicamera2.instances[-1].thread_ids


async def test_access_units_hop_from_the_encoder_thread_to_the_loop(
    picamera2_stand_in: types.ModuleType,
) -> None:
    _, packets, encoder_threads = await _record(picamera2_stand_in, 0.5)
    assert threading.get_ident() not in encoder_threads
    assert len(packets) >= 10
    assert all(p.kind is PacketKind.VIDEO for p in packets)
    keyframes = [i for i, p in enumerate(packets) if p.keyframe]
    assert keyframes[:2] == [0, 10]
    assert all(p.data[4] == 0x65 for p in packets if p.keyframe)
    monos = [p.mono for p in packets]
    assert monos == sorted(monos)
    assert abs(monos[-1] - time.monotonic_ns() // 1000) < 1_000_000  # on CLOCK_MONOTONIC
    assert all(p.duration == 20_000 for p in packets)
    assert FakePicamera2.instances[-1].closed


async def test_sensor_time_on_another_base_is_mapped_onto_monotonic(
    picamera2_stand_in: types.ModuleType,
) -> None:
    FakePicamera2.sensor_base_us = 3_600_000_000  # an hour off, as a boot-time base would be
    _, packets, _ = await _record(picamera2_stand_in, 0.3)
    now = time.monotonic_ns() // 1000
    assert all(now - 2_000_000 < p.mono <= now for p in packets)
    mean_gap = (packets[-1].mono - packets[0].mono) / (len(packets) - 1)
    assert 15_000 < mean_gap < 40_000  # the sensor's 20 ms spacing is kept
    assert all(abs(p.wall - time.time_ns() // 1000) < 2_000_000 for p in packets)


async def test_still_while_recording_and_not_before(
    picamera2_stand_in: types.ModuleType,
) -> None:
    from hardware.base import CameraError

    camera = picamera2_stand_in.PiCamera(CONFIG, microphone=None)
    with pytest.raises(CameraError):
        await camera.still()
    await camera.start(lambda p: None)
    try:
        assert await camera.still() == JPEG
    finally:
        await camera.stop()
