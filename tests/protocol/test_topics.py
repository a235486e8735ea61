"""MQTT topics: built and taken apart in one place."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import topics
from protocol.errors import DecodeError


def test_topics_of_each_channel() -> None:
    assert {c: topics.topic("cam-001", c) for c in topics.Channel} == {
        topics.Channel.STATUS: "unbroken/v1/devices/cam-001/status",
        topics.Channel.EVENTS: "unbroken/v1/devices/cam-001/events",
        topics.Channel.TELEMETRY: "unbroken/v1/devices/cam-001/telemetry",
        topics.Channel.COMMANDS: "unbroken/v1/devices/cam-001/commands",
    }


@pytest.mark.parametrize("channel", list(topics.Channel))
def test_round_trip(channel: topics.Channel) -> None:
    parsed = topics.parse(topics.topic("cam-7", channel))
    assert parsed == topics.ParsedTopic("cam-7", channel)


def test_subscriptions() -> None:
    assert topics.subscription(topics.Channel.EVENTS) == "unbroken/v1/devices/+/events"
    assert (
        topics.subscription(topics.Channel.TELEMETRY, shared_group="servers")
        == "$share/servers/unbroken/v1/devices/+/telemetry"
    )


@pytest.mark.parametrize("group", ["", "a/b", "a+", "#", "x#y"])
def test_shared_group_must_be_one_plain_level(group: str) -> None:
    with pytest.raises(DecodeError):
        topics.subscription(topics.Channel.EVENTS, shared_group=group)


@pytest.mark.parametrize(
    "device", ["", "Cam", "cam/1", "+", "#", "cam 1", "-cam", "c" * 64, "cam\n"]
)
def test_topic_refuses_bad_device_ids(device: str) -> None:
    with pytest.raises(DecodeError):
        topics.topic(device, topics.Channel.EVENTS)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "unbroken/v1/devices/cam-001",
        "unbroken/v1/devices/cam-001/events/extra",
        "unbroken/v2/devices/cam-001/events",
        "unbroken/v1/devices/cam-001/video",
        "unbroken/v1/devices/+/events",
        "unbroken/v1/devices//events",
        "$share/g/unbroken/v1/devices/cam-001/events",
        "/unbroken/v1/devices/cam-001/events",
        "unbroken/v1/devices/CAM/events",
    ],
)
def test_parse_refuses(text: str) -> None:
    with pytest.raises(DecodeError):
        topics.parse(text)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_parse_any_text(text: str) -> None:
    try:
        parsed = topics.parse(text)
    except DecodeError:
        return
    assert topics.topic(parsed.device, parsed.channel) == text
