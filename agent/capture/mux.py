"""Muxing a segment's encoded packets into one playable MPEG-TS file, without re-encoding.

Timestamps are the packets' monotonic capture times on the 90 kHz MPEG clock, so that
consecutive segments of a session play back to back.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from fractions import Fraction

import av

from hardware.base import CameraConfig, MediaPacket, PacketKind

MPEG_TIME_BASE = Fraction(1, 90_000)
CONTENT_TYPE = "video/mp2t"


def _ticks(mono_us: int) -> int:
    return (mono_us * 9) // 100 % (1 << 33)


def mux_segment(
    packets: Sequence[MediaPacket], config: CameraConfig, audio_rate: int = 48_000
) -> bytes:
    """An MPEG-TS file holding ``packets`` (video H.264 Annex B, audio AAC ADTS or raw)."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="mpegts") as out:
        video = out.add_stream("h264", rate=config.fps)
        video.width = config.width
        video.height = config.height
        audio = None
        if any(p.kind is PacketKind.AUDIO for p in packets):
            audio = out.add_stream("aac", rate=audio_rate)
        for p in packets:
            stream = video if p.kind is PacketKind.VIDEO else audio
            if stream is None:
                continue
            packet = av.Packet(p.data)
            packet.stream = stream
            packet.time_base = MPEG_TIME_BASE
            packet.pts = packet.dts = _ticks(p.mono)
            packet.is_keyframe = p.keyframe
            out.mux(packet)
    return buf.getvalue()
