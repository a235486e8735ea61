"""Real encoded media for the simulated camera: H.264 test pattern, AAC tone, JPEG stills,
ADTS framing, SEI user data, and a per-process cache of encoded clips for fleets.

Video is libx264 (preset ultrafast, zero latency, no B-frames, a fixed keyframe interval
with SPS/PPS repeated before each IDR) in Annex B; each call to :meth:`LiveVideo.encode`
yields exactly one access unit. Audio is ffmpeg's AAC-LC encoder, framed as ADTS.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from fractions import Fraction
from functools import cache, lru_cache

import av
import numpy as np
import numpy.typing as npt

from hardware.adts import adts
from hardware.base import CameraConfig, CameraError
from simulator.font import burn_text

AUDIO_RATE = 48_000
AAC_FRAME = 1024
TONE_HZ = 1_000.0
# Identifies our SEI user data (user_data_unregistered, payload type 5).
SEI_UUID = uuid.UUID("5a1c0e2e-7b3d-4c55-9a0f-756e62726b6e")
# Luma of the eight SMPTE bars, and their chroma (U, V).
_BARS_Y = (235, 210, 170, 145, 106, 81, 41, 16)
_BARS_U = (128, 16, 166, 54, 202, 90, 240, 128)
_BARS_V = (128, 146, 16, 34, 222, 240, 110, 128)


# --------------------------------------------------------------------------- pattern


@cache
def _background(width: int, height: int) -> npt.NDArray[np.uint8]:
    """Colour bars over a grey ramp, as one yuv420p buffer (height * 3 / 2 rows)."""
    frame = np.empty((height * 3 // 2, width), np.uint8)
    luma = frame[:height]
    bar = np.repeat(np.arange(8), -(-width // 8))[:width]
    luma[:] = np.array(_BARS_Y, np.uint8)[bar]
    luma[height * 2 // 3 :] = np.linspace(16, 235, width).astype(np.uint8)
    cw, ch = width // 2, height // 2
    chroma_bar = bar[::2][:cw]
    u = np.array(_BARS_U, np.uint8)[chroma_bar]
    v = np.array(_BARS_V, np.uint8)[chroma_bar]
    planes = frame[height:].reshape(-1)
    planes[: cw * ch].reshape(ch, cw)[:] = u
    planes[cw * ch : 2 * cw * ch].reshape(ch, cw)[:] = v
    planes[: cw * ch].reshape(ch, cw)[ch * 2 // 3 :] = 128
    planes[cw * ch : 2 * cw * ch].reshape(ch, cw)[ch * 2 // 3 :] = 128
    frame.setflags(write=False)
    return frame


_NOISE_FRAMES = 16


@cache
def _noise_bank(shape: tuple[int, int]) -> npt.NDArray[np.uint8]:
    """A few frames of seeded noise (0..15), reused in turn: cheap and deterministic."""
    rng = np.random.default_rng(0)
    return rng.integers(0, 16, (_NOISE_FRAMES, *shape), dtype=np.uint8)


def _noise(shape: tuple[int, ...], frame_index: int) -> npt.NDArray[np.uint8]:
    bank = _noise_bank((shape[0], shape[1]))
    noise: npt.NDArray[np.uint8] = bank[frame_index % _NOISE_FRAMES]
    return noise


def wall_text(wall: int) -> str:
    """Wall µs as burned into the picture: ``2026-09-21 08:00:01.040Z``."""
    when = dt.datetime.fromtimestamp(wall / 1e6, dt.UTC)
    return when.strftime("%Y-%m-%d %H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def render(config: CameraConfig, lines: tuple[str, ...], frame_index: int) -> npt.NDArray[np.uint8]:
    """The test pattern with ``lines`` of text burned in and a box moving with the frame
    counter (so that consecutive pictures differ), as a yuv420p buffer."""
    w, h = config.width, config.height
    frame = _background(w, h).copy()
    luma = frame[:h]
    box = max(8, h // 12)
    x = (frame_index * 4) % max(1, w - box)
    luma[h // 2 - box // 2 : h // 2 + box // 2, x : x + box] = 235
    # Sensor-like noise over the ramp, new every frame, so that the encoder spends about
    # the configured bitrate (a flat pattern would cost a fraction of it) and storage and
    # upload figures are realistic.
    ramp = luma[h * 2 // 3 :]
    ramp += _noise(ramp.shape, frame_index)
    scale = max(1, h // 180)
    for row, text in enumerate(lines):
        burn_text(luma, text, 8 * scale, (6 + row * 10) * scale, scale)
    return frame


# --------------------------------------------------------------------------- encoders


@dataclass(frozen=True, slots=True)
class AccessUnit:
    """One encoded H.264 access unit (Annex B)."""

    data: bytes
    keyframe: bool


class LiveVideo:
    """libx264 encoding pictures one at a time, one access unit out per picture in."""

    def __init__(self, config: CameraConfig) -> None:
        try:
            codec = av.CodecContext.create("libx264", "w")
        except (av.FFmpegError, ValueError) as exc:
            raise CameraError(f"libx264 unavailable: {exc}") from exc
        assert isinstance(codec, av.VideoCodecContext)
        codec.width, codec.height = config.width, config.height
        codec.pix_fmt = "yuv420p"
        codec.time_base = Fraction(1, config.fps)
        codec.framerate = Fraction(config.fps)
        codec.bit_rate = config.bitrate
        codec.gop_size = config.keyframe_interval
        kf = config.keyframe_interval
        codec.options = {
            "preset": "ultrafast",
            "tune": "zerolatency",
            # annexb: start codes, as picamera2 gives; repeat-headers: SPS/PPS before every
            # IDR, so that each segment cut at a keyframe decodes on its own.
            "x264-params": (
                f"keyint={kf}:min-keyint={kf}:scenecut=0:bframes=0:repeat-headers=1:annexb=1"
            ),
        }
        codec.open()
        self._codec = codec
        self._width, self._height = config.width, config.height

    def encode(self, picture: npt.NDArray[np.uint8], index: int) -> list[AccessUnit]:
        """Encode one yuv420p picture."""
        frame = av.VideoFrame.from_ndarray(picture, format="yuv420p")
        frame.pts = index
        try:
            packets = self._codec.encode(frame)
        except av.FFmpegError as exc:
            raise CameraError(f"encoder failed: {exc}") from exc
        return [AccessUnit(bytes(p), bool(p.is_keyframe)) for p in packets]


class ToneAudio:
    """A sine tone encoded to AAC-LC, in ADTS packets; timestamps are sample counts.

    The encoder's priming delay is compensated, so packet ``n`` covers samples
    ``[n * 1024, (n + 1) * 1024)``.
    """

    def __init__(self, rate: int = AUDIO_RATE, hz: float = TONE_HZ, bitrate: int = 64_000) -> None:
        codec = av.CodecContext.create("aac", "w")
        assert isinstance(codec, av.AudioCodecContext)
        codec.sample_rate = rate
        codec.layout = "mono"
        codec.format = "fltp"
        codec.bit_rate = bitrate
        codec.time_base = Fraction(1, rate)
        codec.open()
        self._codec = codec
        self.rate = rate
        self._hz = hz
        self._fed = 0  # samples handed to the encoder
        self._delay = -1  # priming samples, learnt from the first packet's pts

    @property
    def fed(self) -> int:
        """Samples encoded so far."""
        return self._fed

    def encode_frame(self) -> list[tuple[bytes, int]]:
        """Encode the next 1024 samples; returns (ADTS packet, first sample) pairs."""
        t = (np.arange(AAC_FRAME) + self._fed) / self.rate
        samples = (0.25 * np.sin(2 * np.pi * self._hz * t)).astype(np.float32)[None, :]
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate = self.rate
        frame.pts = self._fed
        self._fed += AAC_FRAME
        out = []
        for p in self._codec.encode(frame):
            pts = p.pts or 0
            if self._delay < 0:
                self._delay = max(0, -pts)
            out.append((adts(bytes(p), self.rate), pts + self._delay))
        return out


def jpeg(picture: npt.NDArray[np.uint8], width: int, height: int, quality: int = 5) -> bytes:
    """A baseline JPEG of a yuv420p picture (``quality`` is mjpeg's qscale: 2 best, 31 worst)."""
    codec = av.CodecContext.create("mjpeg", "w")
    assert isinstance(codec, av.VideoCodecContext)
    codec.width, codec.height = width, height
    codec.pix_fmt = "yuvj420p"
    codec.time_base = Fraction(1, 1)
    codec.options = {"qmin": str(quality), "qmax": str(quality)}
    codec.open()
    frame = av.VideoFrame.from_ndarray(picture, format="yuv420p").reformat(format="yuvj420p")
    frame.pts = 0
    data = b"".join(bytes(p) for p in codec.encode(frame))
    return data + b"".join(bytes(p) for p in codec.encode(None))


# --------------------------------------------------------------------------- SEI


def _escape(rbsp: bytes) -> bytes:
    """Insert emulation-prevention bytes (00 00 0x -> 00 00 03 0x for x <= 3)."""
    out = bytearray()
    zeros = 0
    for byte in rbsp:
        if zeros >= 2 and byte <= 3:
            out.append(3)
            zeros = 0
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


def _unescape(ebsp: bytes) -> bytes:
    return ebsp.replace(b"\x00\x00\x03", b"\x00\x00")


def sei_user_data(payload: bytes, ident: uuid.UUID = SEI_UUID) -> bytes:
    """An SEI NAL unit (with its 4-byte start code) carrying user_data_unregistered."""
    body = ident.bytes + payload
    size = len(body)
    message = b"\x05" + b"\xff" * (size // 255) + bytes((size % 255,)) + body
    return b"\x00\x00\x00\x01\x06" + _escape(message + b"\x80")


def nal_units(data: bytes) -> list[tuple[int, int]]:
    """(offset of the start code, nal_unit_type) of each NAL unit in an Annex B buffer."""
    units = []
    i = data.find(b"\x00\x00\x01")
    while i >= 0:
        start = i - 1 if i > 0 and data[i - 1] == 0 else i
        if i + 3 < len(data):
            units.append((start, data[i + 3] & 0x1F))
        i = data.find(b"\x00\x00\x01", i + 3)
    return units


def insert_sei(access_unit: bytes, payload: bytes) -> bytes:
    """``access_unit`` with an SEI user-data NAL unit before its first slice (as H.264
    requires SEI to precede the primary coded picture)."""
    for offset, kind in nal_units(access_unit):
        if kind in (1, 5):
            return access_unit[:offset] + sei_user_data(payload) + access_unit[offset:]
    raise CameraError("access unit without a slice")


def read_sei(access_unit: bytes, ident: uuid.UUID = SEI_UUID) -> list[bytes]:
    """The payloads of our user-data SEI messages in ``access_unit``."""
    found = []
    units = nal_units(access_unit)
    for n, (offset, kind) in enumerate(units):
        if kind != 6:
            continue
        end = units[n + 1][0] if n + 1 < len(units) else len(access_unit)
        nal = access_unit[offset:end]
        rbsp = _unescape(nal[nal.index(b"\x00\x00\x01") + 4 :])
        pos = 0
        while pos < len(rbsp) and rbsp[pos] != 0x80:
            ptype = size = 0
            while rbsp[pos] == 0xFF:
                ptype, pos = ptype + 255, pos + 1
            ptype, pos = ptype + rbsp[pos], pos + 1
            while rbsp[pos] == 0xFF:
                size, pos = size + 255, pos + 1
            size, pos = size + rbsp[pos], pos + 1
            body = rbsp[pos : pos + size]
            pos += size
            if ptype == 5 and body[:16] == ident.bytes:
                found.append(body[16:])
    return found


def sei_stamp(device_id: str, wall: int, mono: int, frame: int) -> bytes:
    """The replay camera's SEI payload: who and when, as ``device|wall|mono|frame``."""
    return f"{device_id}|{wall}|{mono}|{frame}".encode()


# --------------------------------------------------------------------------- clips


@dataclass(frozen=True, slots=True)
class Clip:
    """An encoded loop of test pattern: access units and ADTS packets (first sample)."""

    config: CameraConfig
    frames: tuple[AccessUnit, ...]
    audio: tuple[tuple[bytes, int], ...]
    samples: int  # audio samples per loop


# Bounded: a process replays a handful of configurations; least recently used goes first.
@lru_cache(maxsize=8)
def encoded_clip(config: CameraConfig, seconds: int = 8) -> Clip:
    """Encode ``seconds`` of pattern once per process, for replay by many devices.

    ``seconds`` is rounded up to whole GOPs, so that every loop starts at a keyframe. Audio
    packets that would run past the loop's end are left out (a gap under 21 ms per loop).
    """
    gop = config.keyframe_interval
    count = -(-seconds * config.fps // gop) * gop
    video = LiveVideo(config)
    frames: list[AccessUnit] = []
    for i in range(count):
        frames.extend(video.encode(render(config, ("UNBROKEN REPLAY", f"CLIP F {i:06d}"), i), i))
    if len(frames) != count or not frames[0].keyframe:
        raise CameraError("the encoder did not give one access unit per picture")
    samples = count * AUDIO_RATE // config.fps
    audio: list[tuple[bytes, int]] = []
    if config.audio:
        tone = ToneAudio()
        while tone.fed < samples + 2 * AAC_FRAME:
            audio.extend(tone.encode_frame())
        audio = [(data, first) for data, first in audio if first + AAC_FRAME <= samples]
    return Clip(config, tuple(frames), tuple(audio), samples)
