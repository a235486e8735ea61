"""Cutting the packet stream into segments at keyframes, with a bounded pre-roll.

A segment starts at a video keyframe and ends where the next segment's keyframe starts,
once it has lasted at least ``segment_seconds`` (so with a keyframe every second and
``segment_seconds=1`` every segment is one second). While the device is not recording,
the last ``preroll_seconds`` of packets are kept, whole GOPs only, so that recording can
begin a little before the button was pressed.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from hardware.base import MediaPacket, PacketKind


@dataclass(frozen=True, slots=True)
class RawSegment:
    """Packets of one segment and its time span (µs); ``preroll`` if captured before start."""

    packets: tuple[MediaPacket, ...]
    m0: int
    m1: int
    t0: int
    preroll: bool = False

    @property
    def t1(self) -> int:
        """Wall end: start plus the monotonic length (wall time may jump inside)."""
        return self.t0 + (self.m1 - self.m0)

    @property
    def frames(self) -> int:
        """Number of video frames."""
        return sum(1 for p in self.packets if p.kind is PacketKind.VIDEO)


@dataclass
class Segmenter:
    """Feeds on packets; hands out finished segments."""

    segment_seconds: float = 1.0
    max_seconds: float = 2.0
    preroll_seconds: float = 0.0
    recording: bool = False
    _current: list[MediaPacket] = field(default_factory=list)
    # Pre-roll: whole GOPs, oldest dropped first when over preroll_seconds (bounded by time).
    _preroll: deque[list[MediaPacket]] = field(default_factory=deque)

    @property
    def _min_us(self) -> int:
        return int(self.segment_seconds * 1e6)

    def start(self) -> list[RawSegment]:
        """Begin recording; returns the complete pre-roll GOPs as segments (possibly none).

        The GOP in progress is kept as the start of the first recorded segment, so that
        recording begins at the last keyframe rather than waiting for the next one.
        """
        self.recording = True
        gops = [g for g in self._preroll if g]
        self._preroll.clear()
        self._current = gops.pop() if gops else []
        segments = []
        following = [*gops[1:], self._current] if gops else []
        for gop, nxt in zip(gops, following, strict=True):
            end = nxt[0].mono if nxt else None
            seg = self._make(gop, end=end, preroll=True)
            if seg is not None:
                segments.append(seg)
        return segments

    def stop(self, end_mono: int | None = None) -> RawSegment | None:
        """Stop recording; return the last, partial segment."""
        self.recording = False
        seg = self._make(self._current, end=end_mono)
        self._current = []
        return seg

    def feed(self, packet: MediaPacket) -> RawSegment | None:
        """Take one packet; return a segment if this packet completed one."""
        if not self.recording:
            self._keep_preroll(packet)
            return None
        if packet.kind is PacketKind.VIDEO and packet.keyframe and self._current:
            first = self._first_video(self._current)
            if first is not None and packet.mono - first.mono >= self._min_us:
                done = self._make(self._current, end=packet.mono)
                self._current = [packet]
                return done
        if not self._current and not (packet.kind is PacketKind.VIDEO and packet.keyframe):
            return None  # a segment must start at a keyframe: wait for one
        self._current.append(packet)
        return None

    def _keep_preroll(self, packet: MediaPacket) -> None:
        # The GOP in progress is always kept; whole GOPs older than preroll_seconds go.
        if packet.kind is PacketKind.VIDEO and packet.keyframe:
            self._preroll.append([])
        if not self._preroll:
            return
        self._preroll[-1].append(packet)
        horizon = packet.mono - int(self.preroll_seconds * 1e6)
        while len(self._preroll) > 1 and self._preroll[1][0].mono <= horizon:
            self._preroll.popleft()

    @staticmethod
    def _first_video(packets: list[MediaPacket]) -> MediaPacket | None:
        return next((p for p in packets if p.kind is PacketKind.VIDEO), None)

    def _make(
        self, packets: list[MediaPacket], *, end: int | None = None, preroll: bool = False
    ) -> RawSegment | None:
        first = self._first_video(packets)
        if first is None:
            return None
        if end is None:
            last = max(packets, key=lambda p: p.mono)
            end = last.mono + last.duration
        return RawSegment(tuple(packets), first.mono, max(end, first.mono), first.wall, preroll)
