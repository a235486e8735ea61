"""Segments are cut at keyframes, last at least the configured length, join without
gaps, and pre-roll keeps whole GOPs of the last seconds."""

from __future__ import annotations

import itertools

from agent.capture.segmenter import Segmenter
from hardware.base import MediaPacket, PacketKind

FRAME = 40_000  # 25 fps


def frames(n: int, gop: int = 25, start: int = 0) -> list[MediaPacket]:
    return [
        MediaPacket(
            PacketKind.VIDEO,
            b"\x00\x00\x00\x01" + bytes([i % 256]),
            start + i * FRAME,
            1_700_000_000_000_000 + start + i * FRAME,
            keyframe=i % gop == 0,
            duration=FRAME,
        )
        for i in range(n)
    ]


def test_cuts_at_keyframes_every_second() -> None:
    seg = Segmenter(segment_seconds=1.0)
    seg.start()
    out = [s for p in frames(100) if (s := seg.feed(p)) is not None]
    last = seg.stop()
    assert last is not None
    out.append(last)
    assert [s.frames for s in out] == [25, 25, 25, 25]
    assert all(s.packets[0].keyframe for s in out)
    for a, b in itertools.pairwise(out):
        assert a.m1 == b.m0  # contiguous
        assert a.t1 == b.t0
    assert out[-1].m1 == 100 * FRAME


def test_two_second_segments_span_two_gops() -> None:
    seg = Segmenter(segment_seconds=2.0)
    seg.start()
    out = [s for p in frames(125) if (s := seg.feed(p)) is not None]
    assert [s.frames for s in out] == [50, 50]


def test_waits_for_a_keyframe_before_the_first_segment() -> None:
    seg = Segmenter(segment_seconds=1.0, preroll_seconds=0)
    seg.start()
    for p in frames(60)[10:]:
        seg.feed(p)
    last = seg.stop()
    assert last is not None
    assert last.packets[0].keyframe


def test_preroll_keeps_whole_gops_of_the_last_seconds() -> None:
    seg = Segmenter(segment_seconds=1.0, preroll_seconds=2.0)
    for p in frames(260):  # 10.4 s idle
        assert seg.feed(p) is None
    pre = seg.start()
    assert all(s.preroll for s in pre)
    assert [s.frames for s in pre] == [25, 25]  # two whole GOPs before the current one
    assert pre[0].m0 == 200 * FRAME
    out = [s for p in frames(40, start=260 * FRAME) if (s := seg.feed(p)) is not None]
    # the GOP in progress at start became the first recorded segment
    assert out[0].m0 == 250 * FRAME
    assert pre[-1].m1 == out[0].m0


def test_audio_rides_with_its_segment() -> None:
    seg = Segmenter(segment_seconds=1.0)
    seg.start()
    packets = frames(50)
    audio = [
        MediaPacket(PacketKind.AUDIO, b"\xff\xf1", i * 21_333, 0, duration=21_333)
        for i in range(47)
    ]
    merged = sorted(packets + audio, key=lambda p: p.mono)
    out = [s for p in merged if (s := seg.feed(p)) is not None]
    assert out[0].frames == 25
    assert any(p.kind is PacketKind.AUDIO for p in out[0].packets)
