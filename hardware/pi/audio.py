"""A USB or I2S microphone through ALSA, encoded to AAC with PyAV, ADTS-framed.

Capture and encoding run on a thread of ours (``alsa-mic``), since ALSA reads block; each
packet hops to the event loop with ``call_soon_threadsafe``. Timestamps: the monotonic time
at which the last sample of a frame was read, minus the frame's duration.
"""

from __future__ import annotations

import asyncio
import threading
import time
from fractions import Fraction

import av

from hardware.adts import adts
from hardware.base import CameraError, MediaPacket, PacketKind, PacketSink

RATE = 48_000
AAC_FRAME = 1024


class AlsaMicrophone:
    """``device`` is an ALSA name: ``default``, ``hw:1,0``, ``plughw:CARD=Device``."""

    def __init__(self, device: str = "default", bitrate: int = 64_000) -> None:
        self.device = device
        self.bitrate = bitrate
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self.packets = 0

    async def start(self, loop: asyncio.AbstractEventLoop, sink: PacketSink) -> None:
        """Open the device and start the capture thread."""
        try:
            container = av.open(self.device, format="alsa", options={"sample_rate": str(RATE)})
        except av.FFmpegError as exc:
            raise CameraError(f"microphone {self.device}: {exc}") from exc
        self._stopping.clear()
        self._thread = threading.Thread(
            target=self._run, args=(container, loop, sink), name="alsa-mic", daemon=True
        )
        self._thread.start()

    async def stop(self) -> None:
        """Stop capture and wait for the thread."""
        self._stopping.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            await asyncio.to_thread(thread.join, 2.0)

    def _deliver(self, sink: PacketSink, packet: MediaPacket) -> None:
        # On the event loop thread: nothing reaches the sink once stop() has begun.
        if not self._stopping.is_set():
            sink(packet)

    def _run(
        self,
        container: av.container.InputContainer,
        loop: asyncio.AbstractEventLoop,
        sink: PacketSink,
    ) -> None:
        # Runs on the "alsa-mic" thread.
        encoder = av.CodecContext.create("aac", "w")
        assert isinstance(encoder, av.AudioCodecContext)
        encoder.sample_rate, encoder.layout, encoder.format = RATE, "mono", "fltp"
        encoder.bit_rate, encoder.time_base = self.bitrate, Fraction(1, RATE)
        encoder.open()
        resampler = av.AudioResampler(format="fltp", layout="mono", rate=RATE)
        duration = AAC_FRAME * 1_000_000 // RATE
        try:
            for frame in container.decode(audio=0):
                if self._stopping.is_set():
                    break
                for chunk in resampler.resample(frame):
                    for packet in encoder.encode(chunk):
                        mono = time.monotonic_ns() // 1000 - duration
                        wall = time.time_ns() // 1000 - duration
                        item = MediaPacket(
                            PacketKind.AUDIO, adts(bytes(packet), RATE), mono, wall, False, duration
                        )
                        loop.call_soon_threadsafe(self._deliver, sink, item)
                        self.packets += 1
        finally:
            container.close()
