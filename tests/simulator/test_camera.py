"""The simulated camera: real H.264/AAC, burned-in text, replay with SEI, faults."""

from __future__ import annotations

import asyncio
import io
import itertools
import time

import av
import numpy as np
import pytest

from hardware.base import CameraConfig, CameraError, MediaPacket, PacketKind
from simulator.camera import SimCamera
from simulator.clock import SimClock, Timeline, run
from simulator.font import burn_text, text_mask
from simulator.video import (
    insert_sei,
    nal_units,
    read_sei,
    render,
    sei_user_data,
    wall_text,
)

SMALL = CameraConfig(width=320, height=180, fps=25, keyframe_interval=25)


def capture(
    seconds: float, config: CameraConfig = SMALL, mode: str = "live", **inject: float
) -> tuple[SimCamera, list[MediaPacket]]:
    async def main() -> tuple[SimCamera, list[MediaPacket]]:
        camera = SimCamera(SimClock(Timeline()), "dev-7", config, mode=mode)  # type: ignore[arg-type]
        packets: list[MediaPacket] = []
        await camera.start(packets.append)
        left = seconds
        if "stall" in inject:
            await camera.clock.sleep(1)
            camera.inject_stall(inject["stall"])
            left -= 1
        await camera.clock.sleep(left)
        await camera.stop()
        return camera, packets

    return run(main())


def video(packets: list[MediaPacket]) -> list[MediaPacket]:
    return [p for p in packets if p.kind is PacketKind.VIDEO]


def decode(packets: list[MediaPacket]) -> list[np.ndarray]:
    codec = av.CodecContext.create("h264", "r")
    frames = []
    for p in video(packets):
        for frame in codec.decode(av.Packet(p.data)):
            frames.append(frame.to_ndarray(format="gray"))
    return frames


def test_live_video_is_annex_b_with_idr_every_interval() -> None:
    _, packets = capture(4)
    frames = video(packets)
    assert len(frames) == pytest.approx(100, abs=1)
    keyframes = [i for i, p in enumerate(frames) if p.keyframe]
    assert keyframes == list(range(0, len(frames), 25))
    for p in frames:
        assert p.data.startswith(b"\x00\x00\x00\x01")
        kinds = [k for _, k in nal_units(p.data)]
        if p.keyframe:
            assert kinds.index(7) < kinds.index(8) < kinds.index(5)  # SPS, PPS, IDR
        else:
            assert 5 not in kinds
    deltas = {b.mono - a.mono for a, b in itertools.pairwise(frames)}
    assert deltas == {40_000}


def test_audio_is_adts_aac_in_time_order() -> None:
    _, packets = capture(2)
    audio = [p for p in packets if p.kind is PacketKind.AUDIO]
    assert len(audio) == pytest.approx(2 * 48_000 / 1024, abs=2)
    for p in audio:
        assert p.data[0] == 0xFF
        assert p.data[1] & 0xF0 == 0xF0
        assert ((p.data[3] & 3) << 11 | p.data[4] << 3 | p.data[5] >> 5) == len(p.data)
    monos = [p.mono for p in packets]
    assert monos == sorted(monos)
    decoder = av.CodecContext.create("aac", "r")
    decoded = sum(f.samples for p in audio for f in decoder.decode(av.Packet(p.data)))
    assert decoded > 40_000


def test_burned_in_text_survives_encoding() -> None:
    luma = np.full((180, 320), 128, np.uint8)
    mask = burn_text(luma, "DEV-7", 8, 6, 1)
    assert mask.sum() == text_mask("DEV-7", 1).sum()
    _, packets = capture(0.2)
    frame = decode(packets)[0]
    picture = render(SMALL, ("DEV-7", "X", "F 00000000"), 0)[:180]
    expected = burn_text(picture.copy(), "DEV-7", 8, 6, 1)
    assert frame[expected].mean() > frame[~expected][:2000].mean() + 40
    assert frame[expected].mean() > 180


def test_frame_counter_changes_the_picture() -> None:
    a = render(SMALL, ("DEV", wall_text(0), "F 00000001"), 1)
    b = render(SMALL, ("DEV", wall_text(0), "F 00000002"), 2)
    assert (a != b).any()
    assert wall_text(1_790_000_000_040_000) == "2026-09-21 14:13:20.040Z"


def test_replay_stamps_each_keyframe_with_device_and_time() -> None:
    _, packets = capture(20, mode="replay")
    frames = video(packets)
    assert len(frames) == pytest.approx(500, abs=1)
    stamps = [read_sei(p.data) for p in frames if p.keyframe]
    assert len(stamps) == -(-len(frames) // 25)
    for (stamp,), p in zip(stamps, [p for p in frames if p.keyframe], strict=True):
        device, wall, mono, _ = stamp.decode().split("|")
        assert device == "dev-7"
        assert (int(wall), int(mono)) == (p.wall, p.mono)
    assert all(not read_sei(p.data) for p in frames if not p.keyframe)
    assert len(decode(packets)) == len(frames)  # replayed loops decode cleanly


def test_sei_payload_with_start_code_lookalikes_roundtrips() -> None:
    payload = b"\x00\x00\x01\x00\x00\x00\x00\x03" * 40
    nal = sei_user_data(payload)
    assert b"\x00\x00\x01" not in nal[4:]
    assert b"\x00\x00\x00" not in nal[4:]
    au = b"\x00\x00\x00\x01\x65" + b"\x88" * 10
    assert read_sei(insert_sei(au, payload)) == [payload]


def test_still_is_a_decodable_jpeg() -> None:
    async def main() -> bytes:
        camera = SimCamera(SimClock(Timeline()), "dev-7", SMALL)
        return await camera.still()

    data = run(main())
    assert data[:2] == b"\xff\xd8"
    with av.open(io.BytesIO(data)) as container:
        frame = next(container.decode(video=0))
    assert (frame.width, frame.height) == (320, 180)


def test_failure_stops_frames_and_still() -> None:
    async def main() -> tuple[int, int]:
        camera = SimCamera(SimClock(Timeline()), "dev-7", SMALL)
        packets: list[MediaPacket] = []
        await camera.start(packets.append)
        await camera.clock.sleep(1)
        camera.inject_failure("sensor gone")
        before = len(packets)
        await camera.clock.sleep(1)
        with pytest.raises(CameraError):
            await camera.still()
        after = len(packets)
        await camera.stop()
        with pytest.raises(CameraError):
            await camera.start(packets.append)
        return before, after

    before, after = run(main())
    assert before > 0
    assert after == before


def test_stall_leaves_a_gap_then_capture_resumes() -> None:
    _, packets = capture(3, stall=1.0)
    frames = video(packets)
    gaps = [b.mono - a.mono for a, b in itertools.pairwise(frames)]
    assert max(gaps) >= 1_000_000
    assert len(frames) == pytest.approx(50, abs=2)


def test_power_cut_silences_the_sink_at_once() -> None:
    async def main() -> int:
        camera = SimCamera(SimClock(Timeline()), "dev-7", SMALL, mode="replay")
        packets: list[MediaPacket] = []
        await camera.start(packets.append)
        await camera.clock.sleep(1)
        camera.power_cut()
        count = len(packets)
        await asyncio.sleep(2)
        assert not camera.running
        return len(packets) - count

    assert run(main()) == 0


def test_live_640x360_runs_faster_than_real_time() -> None:
    started = time.perf_counter()
    capture(4, CameraConfig(width=640, height=360, fps=25))
    assert time.perf_counter() - started < 4  # at least real time even on a slow runner


@pytest.mark.parametrize("mode", ["live", "replay"])
def test_spends_about_the_configured_bitrate(mode: str) -> None:
    config = CameraConfig(width=320, height=180, bitrate=500_000)
    camera, _ = capture(8, config, mode=mode)
    kbits = camera.bytes * 8 / 8 / 1000
    assert 350 < kbits < 800  # 500 kbit/s video plus ~64 kbit/s audio


def test_falling_behind_scaled_time_skips_frames_instead_of_queueing() -> None:
    async def main() -> tuple[SimCamera, list[MediaPacket]]:
        camera = SimCamera(SimClock(Timeline()), "dev-7", CameraConfig(width=640, height=360))
        packets: list[MediaPacket] = []
        await camera.start(packets.append)
        await camera.clock.sleep(60)  # at 400x: 0.15 s real, far faster than the encoder
        await camera.stop()
        return camera, packets

    camera, packets = run(main(), speed=400)
    assert camera.history.of("dropped")
    assert len(video(packets)) < 60 * 25 / 2
    monos = [p.mono for p in packets]
    assert monos == sorted(monos)


@pytest.mark.parametrize("mode", ["live", "replay"])
def test_a_segment_cut_at_a_keyframe_muxes_and_plays(mode: str) -> None:
    """The agent's muxer turns the camera's packets into MPEG-TS that a player decodes."""
    from agent.capture.mux import mux_segment

    _, packets = capture(3, mode=mode)
    keys = [p.mono for p in video(packets) if p.keyframe]
    segment = [p for p in packets if keys[1] <= p.mono < keys[2]]  # the second GOP alone
    data = mux_segment(segment, SMALL)
    with av.open(io.BytesIO(data)) as container:
        assert container.format.name == "mpegts"
        pictures = list(container.decode(video=0))
    with av.open(io.BytesIO(data)) as container:
        samples = sum(f.samples for f in container.decode(audio=0))
    assert len(pictures) == 25  # every picture of the GOP, from its own SPS/PPS
    assert (pictures[0].width, pictures[0].height) == (320, 180)
    assert samples == pytest.approx(48_000, rel=0.1)  # one second of tone
