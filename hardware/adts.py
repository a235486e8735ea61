"""ADTS framing of raw AAC frames (ISO/IEC 13818-7), shared by the Pi's microphone and the
simulator's tone: MPEG-TS carries AAC as ADTS."""

from __future__ import annotations

SAMPLE_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000)
HEADER = 7


def adts_header(payload: int, rate: int, channels: int) -> bytes:
    """The 7-byte ADTS header (AAC LC, no CRC) of a frame of ``payload`` bytes."""
    length = payload + HEADER
    rate_index = SAMPLE_RATES.index(rate)
    profile = 1  # AAC LC (audio object type 2, minus one)
    return bytes(
        (
            0xFF,
            0xF1,  # sync, MPEG-4, layer 0, no CRC
            (profile << 6) | (rate_index << 2) | (channels >> 2),
            ((channels & 3) << 6) | (length >> 11),
            (length >> 3) & 0xFF,
            ((length & 7) << 5) | 0x1F,  # buffer fullness 0x7FF (variable rate)
            0xFC,
        )
    )


def adts(payload: bytes, rate: int = 48_000, channels: int = 1) -> bytes:
    """``payload`` (one raw AAC frame) with its ADTS header."""
    return adts_header(len(payload), rate, channels) + payload
