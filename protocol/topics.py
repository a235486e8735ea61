"""MQTT topics: every topic string of the system is built and matched here, nowhere else.

Layout (``{device}`` is a device id)::

    unbroken/v1/devices/{device}/status      retained; the last will says "offline"
    unbroken/v1/devices/{device}/events      signed events (recording, incidents, faults)
    unbroken/v1/devices/{device}/telemetry   signed health every N seconds
    unbroken/v1/devices/{device}/commands    server -> device requests

Server replicas subscribe through a shared subscription
``$share/{group}/unbroken/v1/devices/+/{channel}`` so that each message reaches one replica.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from protocol.errors import DecodeError
from protocol.wire import check_device_id

PREFIX = "unbroken/v1/devices"


class Channel(StrEnum):
    """The per-device topics."""

    STATUS = "status"
    EVENTS = "events"
    TELEMETRY = "telemetry"
    COMMANDS = "commands"


def topic(device: str, channel: Channel) -> str:
    """The topic of ``channel`` for ``device``."""
    return f"{PREFIX}/{check_device_id(device)}/{channel.value}"


def subscription(channel: Channel, *, shared_group: str | None = None) -> str:
    """The filter matching ``channel`` of every device, optionally as a shared subscription."""
    base = f"{PREFIX}/+/{channel.value}"
    if shared_group is None:
        return base
    if not shared_group or any(c in shared_group for c in "/+#"):
        raise DecodeError(f"invalid shared subscription group {shared_group!r}")
    return f"$share/{shared_group}/{base}"


@dataclass(frozen=True, slots=True)
class ParsedTopic:
    """A device topic taken apart."""

    device: str
    channel: Channel


def parse(text: str) -> ParsedTopic:
    """Take a device topic apart; DecodeError for anything else."""
    parts = text.split("/")
    if len(parts) != 5 or "/".join(parts[:3]) != PREFIX:
        raise DecodeError(f"not an unbroken device topic: {text!r}")
    try:
        channel = Channel(parts[4])
    except ValueError as exc:
        raise DecodeError(f"unknown channel in topic {text!r}") from exc
    return ParsedTopic(check_device_id(parts[3], "topic device"), channel)
