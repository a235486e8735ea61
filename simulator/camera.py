"""The simulated camera: real H.264 and AAC, paced by the device's (virtual) clock.

Two sources of pictures:

* ``live`` (one device): the test pattern with the device id, wall time and frame counter
  burned in, encoded by libx264 as it is captured;
* ``replay`` (fleets): a clip encoded once per process (:func:`simulator.video.encoded_clip`)
  whose access units are replayed re-timed, with the device id, wall and monotonic time and
  frame counter in an SEI user-data NAL unit before each keyframe.

Packets reach the sink on the event loop thread, in capture-time order, one video access
unit per frame interval followed by the audio packets of that interval. Encoding runs on
the loop thread on purpose: on the virtual loop, time must not pass while a frame is made.
If encoding falls behind the clock by more than ``max_lag`` (scaled real time too fast for
the CPU), frames are skipped, not queued, and each skip is in the history.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from typing import Literal

import numpy as np
import numpy.typing as npt

from hardware.base import (
    Camera,
    CameraConfig,
    CameraError,
    MediaPacket,
    PacketKind,
    PacketSink,
)
from simulator.clock import US, SimClock
from simulator.history import History
from simulator.video import (
    AAC_FRAME,
    AUDIO_RATE,
    LiveVideo,
    ToneAudio,
    encoded_clip,
    insert_sei,
    jpeg,
    render,
    sei_stamp,
    wall_text,
)

Mode = Literal["live", "replay"]


class SimCamera(Camera):
    """A camera on a :class:`~simulator.clock.SimClock`, with failure injection."""

    def __init__(
        self,
        clock: SimClock,
        device_id: str,
        config: CameraConfig | None = None,
        *,
        mode: Mode = "live",
        clip_seconds: int = 8,
        max_lag: float = 1.0,
    ) -> None:
        self.config = config or CameraConfig()
        self.clock = clock
        self.device_id = device_id
        self.mode = mode
        self.clip_seconds = clip_seconds
        self.max_lag = max_lag
        self.history = History(clock.timeline.now)
        self.frames = 0  # video access units delivered
        self.audio_packets = 0
        self.bytes = 0
        self.listeners: list[Callable[[bool], None]] = []  # told when capture runs or stops
        self._task: asyncio.Task[None] | None = None
        self._sink: PacketSink | None = None
        self._failure: str | None = None
        self._stall_until = 0  # mono µs
        self._last_picture: npt.NDArray[np.uint8] | None = None

    @property
    def running(self) -> bool:
        """Capture is on."""
        return self._task is not None and not self._task.done()

    # ------------------------------------------------------------------ Camera
    async def start(self, sink: PacketSink) -> None:
        """Start capture; packets go to ``sink`` until :meth:`stop`."""
        if self._failure:
            raise CameraError(self._failure)
        if self.running:
            raise CameraError("camera already started")
        self._sink = sink
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._capture(), name=f"camera:{self.device_id}")
        self.history.add("start", mode=self.mode)
        self._tell(True)

    async def stop(self) -> None:
        """Stop capture (the encoder is released; the next start begins with a keyframe)."""
        task, self._task = self._task, None
        self._sink = None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self.history.add("stop", frames=self.frames)
            self._tell(False)

    async def still(self) -> bytes:
        """A JPEG of the current picture, with the device id and time burned in."""
        if self._failure:
            raise CameraError(self._failure)
        picture = self._last_picture
        if picture is None or self.mode == "replay":
            picture = render(self.config, self._lines(self.clock.wall(), self.frames), 0)
        data = jpeg(picture, self.config.width, self.config.height)
        self.history.add("still", bytes=len(data))
        return data

    # ------------------------------------------------------------------ inject
    def inject_failure(self, reason: str = "sensor timeout") -> None:
        """The camera stops delivering frames; start() and still() raise CameraError."""
        self._failure = reason
        self.history.add("failure", reason=reason)

    def inject_recover(self) -> None:
        """Frames flow again (after a failure or a stall)."""
        self._failure = None
        self._stall_until = 0
        self.history.add("recover")

    def inject_stall(self, seconds: float) -> None:
        """No frames for ``seconds`` of device time, then capture resumes by itself."""
        self._stall_until = self.clock.mono() + round(seconds * US)
        self.history.add("stall", seconds=seconds)

    def power_cut(self) -> None:
        """Power gone: capture ends at once, the sink hears nothing more, nothing is flushed."""
        task, self._task = self._task, None
        self._sink = None
        if task is not None:
            task.cancel()  # the task is gone with the device; nothing awaits its end
            self.history.add("power_cut", frames=self.frames)
            self._tell(False)

    # ------------------------------------------------------------------ capture
    def _tell(self, running: bool) -> None:
        for listener in self.listeners:
            listener(running)

    def _lines(self, wall: int, frame: int) -> tuple[str, ...]:
        return (self.device_id, wall_text(wall), f"F {frame:08d}")

    async def _capture(self) -> None:
        config = self.config
        frame_us = US / config.fps
        source = _Replay(self) if self.mode == "replay" else _Live(self)
        m0 = self.clock.mono()
        i = 0
        while True:
            due = m0 + round(i * frame_us)
            now = self.clock.mono()
            if due > now:
                await self.clock.sleep((due - now) / US)
            elif now - due > self.max_lag * US:
                skip = int((now - m0) / frame_us) + 1 - i
                self.history.add("dropped", frames=skip)
                i += skip
                source.resync()
                continue
            if self._failure or due < self._stall_until:
                i += 1
                source.resync()
                continue
            wall = self.clock.wall() - (self.clock.mono() - due)
            try:
                packets = source.frame(i, due, wall, round(frame_us))
            except CameraError as exc:
                self.inject_failure(f"encoder: {exc}")
                continue
            sink = self._sink
            if sink is None:
                return
            for packet in packets:
                sink(packet)
                self.bytes += len(packet.data)
                if packet.kind is PacketKind.VIDEO:
                    self.frames += 1
                else:
                    self.audio_packets += 1
            i += 1


class _Live:
    """Live encoding of the burned-in pattern."""

    def __init__(self, camera: SimCamera) -> None:
        self.camera = camera
        self.video = LiveVideo(camera.config)
        self.audio = ToneAudio() if camera.config.audio else None
        self.a0 = 0  # mono µs of audio sample 0; 0 until the next frame anchors it
        # Encoded audio not yet due: at most the encoder's delay plus one packet.
        self.pending: deque[tuple[bytes, int]] = deque()

    def resync(self) -> None:
        """Frames were skipped: audio continues from the next frame, not from the gap."""
        self.a0 = 0

    def frame(self, i: int, mono: int, wall: int, duration: int) -> list[MediaPacket]:
        cam = self.camera
        if self.a0 == 0 and self.audio is not None:
            first = self.pending[0][1] if self.pending else self.audio.fed
            self.a0 = mono - first * US // AUDIO_RATE
        picture = render(cam.config, cam._lines(wall, i), i)
        cam._last_picture = picture
        out = [
            MediaPacket(PacketKind.VIDEO, au.data, mono, wall, au.keyframe, duration)
            for au in self.video.encode(picture, i)
        ]
        if self.audio is not None:
            end = (mono + duration - self.a0) * AUDIO_RATE // US
            while True:
                if not self.pending:
                    self.pending.extend(self.audio.encode_frame())
                    continue
                data, first = self.pending[0]
                if first >= end:
                    break
                self.pending.popleft()
                at = self.a0 + first * US // AUDIO_RATE
                dur = AAC_FRAME * US // AUDIO_RATE
                out.append(MediaPacket(PacketKind.AUDIO, data, at, wall + at - mono, False, dur))
        return out


class _Replay:
    """Replay of a cached clip, re-timed, stamped with SEI at keyframes."""

    def __init__(self, camera: SimCamera) -> None:
        self.camera = camera
        self.clip = encoded_clip(camera.config, camera.clip_seconds)
        self.i0: int | None = None
        self.a0 = 0
        self.next_audio = 0  # index into the looped audio packets

    def resync(self) -> None:
        """Frames were skipped: the clip restarts at its first keyframe with the next frame."""
        self.i0 = None
        self.next_audio = 0

    def frame(self, i: int, mono: int, wall: int, duration: int) -> list[MediaPacket]:
        clip = self.clip
        if self.i0 is None:
            self.i0, self.a0, self.next_audio = i, mono, 0
        n = i - self.i0
        au = clip.frames[n % len(clip.frames)]
        data = au.data
        if au.keyframe:
            data = insert_sei(data, sei_stamp(self.camera.device_id, wall, mono, i))
        out = [MediaPacket(PacketKind.VIDEO, data, mono, wall, au.keyframe, duration)]
        if clip.audio:
            end = (mono + duration - self.a0) * AUDIO_RATE // US
            per_loop = len(clip.audio)
            while True:
                loop, k = divmod(self.next_audio, per_loop)
                data, first = clip.audio[k]
                sample = loop * clip.samples + first
                if sample >= end:
                    break
                at = self.a0 + sample * US // AUDIO_RATE
                dur = AAC_FRAME * US // AUDIO_RATE
                out.append(MediaPacket(PacketKind.AUDIO, data, at, wall + at - mono, False, dur))
                self.next_audio += 1
        return out
