"""Prometheus metrics: per-device health gauges and counters of segments verified and rejected.

Each app has its own :class:`Metrics` on its own ``CollectorRegistry`` (never the global one),
so that several servers can live in one process (tests, an in-process server). The gauges
are refreshed from the fleet state in the database at every scrape, so every replica
answers with the whole fleet; the counters count what this process verified or rejected
(Prometheus sums them over replicas).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)

#: The media type of :meth:`Metrics.render`.
CONTENT_TYPE = CONTENT_TYPE_LATEST


@dataclass(frozen=True, slots=True)
class DeviceGauges:
    """One device's readings as the gauges show them (None: not reported yet)."""

    device: str
    battery_percent: float | None
    storage_free_bytes: int | None
    clock_offset_seconds: float | None
    backlog_records: int | None
    backlog_bytes: int | None
    last_seen_seconds: float | None
    online: bool


class Metrics:
    """The server's Prometheus metrics."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        labels = ["device"]
        reg = self.registry
        self.battery = Gauge(
            "unbroken_device_battery_percent", "Battery charge (percent)", labels, registry=reg
        )
        self.storage_free = Gauge(
            "unbroken_device_storage_free_bytes", "Free evidence storage", labels, registry=reg
        )
        self.clock_offset = Gauge(
            "unbroken_device_clock_offset_seconds",
            "Device clock minus reference time",
            labels,
            registry=reg,
        )
        self.backlog = Gauge(
            "unbroken_device_backlog_records", "Records not yet uploaded", labels, registry=reg
        )
        self.backlog_media = Gauge(
            "unbroken_device_backlog_media",
            "Media files not yet uploaded (as the device reports them)",
            labels,
            registry=reg,
        )
        self.last_seen = Gauge(
            "unbroken_device_last_seen_timestamp_seconds",
            "When the server last heard from the device (Unix time)",
            labels,
            registry=reg,
        )
        self.online = Gauge(
            "unbroken_device_online",
            "1 if the device's last status is online",
            labels,
            registry=reg,
        )
        self.verified = Counter(
            "unbroken_segments_verified",
            "Segment records whose signature, chain and certificates verified",
            labels,
            registry=reg,
        )
        self.rejected = Counter(
            "unbroken_segments_rejected",
            "Records refused or quarantined (bad signature, fork, after revocation)",
            labels,
            registry=reg,
        )
        self.events = Counter(
            "unbroken_events_received", "Signed MQTT announcements accepted", labels, registry=reg
        )
        self.events_dropped = Counter(
            "unbroken_events_dropped",
            "MQTT announcements dropped, by reason",
            ["reason"],
            registry=reg,
        )

    def segment_verified(self, device: str, count: int = 1) -> None:
        """Count segments that passed verification."""
        if count > 0:
            self.verified.labels(device=device).inc(count)

    def segment_rejected(self, device: str, count: int = 1) -> None:
        """Count records that were refused or quarantined."""
        if count > 0:
            self.rejected.labels(device=device).inc(count)

    def event_received(self, device: str) -> None:
        """Count an accepted announcement."""
        self.events.labels(device=device).inc()

    def event_dropped(self, reason: str) -> None:
        """Count a dropped announcement (duplicate, bad signature, malformed...)."""
        self.events_dropped.labels(reason=reason).inc()

    def set_devices(self, devices: Iterable[DeviceGauges]) -> None:
        """Replace the per-device gauges with ``devices`` (devices gone are dropped)."""
        gauges = (
            self.battery,
            self.storage_free,
            self.clock_offset,
            self.backlog,
            self.backlog_media,
            self.last_seen,
            self.online,
        )
        for gauge in gauges:
            gauge.clear()
        for d in devices:
            values = (
                d.battery_percent,
                d.storage_free_bytes,
                d.clock_offset_seconds,
                d.backlog_records,
                d.backlog_bytes,
                d.last_seen_seconds,
                1.0 if d.online else 0.0,
            )
            for gauge, value in zip(gauges, values, strict=True):
                if value is not None:
                    gauge.labels(device=d.device).set(value)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
