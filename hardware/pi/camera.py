"""The Pi camera through picamera2: the hardware H.264 encoder, access units to the loop.

picamera2's ``H264Encoder`` (the V4L2 encoder of the Pi 4, or libav on the Pi 5) pushes each
access unit to an ``Output`` through ``outputframe(frame, keyframe, timestamp, ...)`` on the
encoder's own thread. :class:`_AccessUnitOutput` copies the bytes and hops to the event loop
with ``call_soon_threadsafe``; only there does the agent's sink run. SPS/PPS are repeated
before every IDR (``repeat=True``) so each keyframe starts a decodable segment.

Sensor timestamps are CLOCK_MONOTONIC µs (as the agent's mono); if a firmware gives another
base, the first frame fixes the offset. Audio, where the board has a microphone, comes from
:class:`hardware.pi.audio.AlsaMicrophone`.
"""

from __future__ import annotations

import asyncio
import io
import time
from typing import Any

from picamera2 import Picamera2  # vendor library: imported only when the pi backend is chosen
from picamera2.encoders import H264Encoder
from picamera2.outputs import Output

from hardware.base import Camera, CameraConfig, CameraError, MediaPacket, PacketKind, PacketSink
from hardware.pi.audio import AlsaMicrophone

MONO_SLACK_US = 10_000_000  # a sensor timestamp this close to our mono is on the same clock


class _AccessUnitOutput(Output):  # type: ignore[misc]  # picamera2 is untyped
    """Receives access units on picamera2's encoder thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop, camera: PiCamera) -> None:
        super().__init__()
        self._loop = loop
        self._camera = camera

    def outputframe(
        self,
        frame: Any,
        keyframe: bool = True,
        timestamp: int | None = None,
        packet: Any = None,
        audio: bool = False,
    ) -> None:
        """Called on picamera2's encoder thread: copy, then hop to the event loop."""
        if audio:
            return  # audio is ours (AlsaMicrophone), not picamera2's
        data = bytes(frame)
        self._loop.call_soon_threadsafe(self._camera._deliver, data, keyframe, timestamp)


class PiCamera(Camera):
    """Camera Module 2/3 (or HQ) via picamera2."""

    def __init__(
        self, config: CameraConfig | None = None, microphone: str | None = "default"
    ) -> None:
        self.config = config or CameraConfig()
        self._microphone_device = microphone if self.config.audio else None
        self._picam: Any = None
        self._encoder: Any = None
        self._sink: PacketSink | None = None
        self._mic: AlsaMicrophone | None = None
        self._offset_us: int | None = None
        self._last_mono = 0
        self.frames = 0

    async def start(self, sink: PacketSink) -> None:
        """Configure the sensor and start the encoder (blocking calls run in a thread)."""
        loop = asyncio.get_running_loop()
        self._sink = sink
        self._offset_us = None
        try:
            await asyncio.to_thread(self._open, loop)
        except Exception as exc:
            raise CameraError(f"camera start failed: {exc}") from exc
        if self._microphone_device:
            self._mic = AlsaMicrophone(self._microphone_device)
            await self._mic.start(loop, sink)

    def _open(self, loop: asyncio.AbstractEventLoop) -> None:
        cfg = self.config
        picam = Picamera2()
        video = picam.create_video_configuration(
            main={"size": (cfg.width, cfg.height), "format": "YUV420"},
            controls={"FrameRate": cfg.fps},
        )
        picam.configure(video)
        encoder = H264Encoder(bitrate=cfg.bitrate, repeat=True, iperiod=cfg.keyframe_interval)
        picam.start_recording(encoder, _AccessUnitOutput(loop, self))
        self._picam, self._encoder = picam, encoder

    def _deliver(self, data: bytes, keyframe: bool, timestamp: int | None) -> None:
        # On the event loop thread (scheduled by _AccessUnitOutput.outputframe).
        sink = self._sink
        if sink is None:
            return
        now_mono, now_wall = time.monotonic_ns() // 1000, time.time_ns() // 1000
        if timestamp is None:
            mono = now_mono
        else:
            if self._offset_us is None:
                close = abs(timestamp - now_mono) < MONO_SLACK_US
                self._offset_us = 0 if close else now_mono - timestamp
            mono = timestamp + self._offset_us
        mono = max(mono, self._last_mono + 1)  # never back, even across a firmware hiccup
        self._last_mono = mono
        self.frames += 1
        duration = 1_000_000 // self.config.fps
        sink(
            MediaPacket(
                PacketKind.VIDEO, data, mono, now_wall - (now_mono - mono), keyframe, duration
            )
        )

    async def stop(self) -> None:
        """Stop the encoder and release the camera."""
        self._sink = None
        if self._mic is not None:
            await self._mic.stop()
            self._mic = None
        picam, self._picam = self._picam, None
        if picam is not None:
            await asyncio.to_thread(_close, picam)

    async def still(self) -> bytes:
        """A JPEG from the main stream while recording goes on."""
        if self._picam is None:
            raise CameraError("camera not started")
        buf = io.BytesIO()
        try:
            await asyncio.to_thread(self._picam.capture_file, buf, format="jpeg")
        except Exception as exc:
            raise CameraError(f"still failed: {exc}") from exc
        return buf.getvalue()


def _close(picam: Any) -> None:
    picam.stop_recording()
    picam.close()
