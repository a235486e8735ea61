"""The Pi's clock: the kernel's wall and monotonic time; sync state from chrony.

``chronyc -c tracking`` gives the offset (its "System time" field is positive when the
system clock is *slow* of NTP time, so local minus reference is its negation) and the leap
status ("Not synchronised" when unsynced). Without chrony, ``timedatectl show`` says only
whether the clock is synchronised. Readings are cached for ``cache_seconds``: status() is
synchronous and called from the event loop, so its subprocess is short and rare.
"""

from __future__ import annotations

import asyncio
import subprocess
import time

from hardware.base import Clock, ClockSource, ClockStatus

CHRONYC = ("chronyc", "-c", "tracking")
TIMEDATECTL = ("timedatectl", "show", "-p", "NTPSynchronized", "-p", "CanNTP")


def parse_chronyc(csv_line: str) -> ClockStatus | None:
    """Parse one line of ``chronyc -c tracking``; None if it is not that."""
    fields = csv_line.strip().split(",")
    if len(fields) < 14:
        return None
    try:
        slow_by = float(fields[4])
    except ValueError:
        return None
    leap = fields[13].strip().lower()
    synced = not leap.startswith("not synchron") and fields[1] not in ("", "127.127.1.1")
    source = ClockSource.NTP if synced else ClockSource.NONE
    return ClockStatus(source, round(-slow_by * 1e6), synced)


def parse_timedatectl(text: str) -> ClockStatus | None:
    """Parse ``timedatectl show`` properties; the offset is unknown there (0)."""
    props = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    if "NTPSynchronized" not in props:
        return None
    synced = props["NTPSynchronized"] == "yes"
    return ClockStatus(ClockSource.NTP if synced else ClockSource.RTC, 0, synced)


class PiClock(Clock):
    """Kernel time; status from chronyc, else timedatectl, else unknown."""

    def __init__(self, cache_seconds: float = 30.0) -> None:
        self.cache_seconds = cache_seconds
        self._cached: tuple[float, ClockStatus] | None = None

    def wall(self) -> int:
        """CLOCK_REALTIME in µs."""
        return time.time_ns() // 1000

    def mono(self) -> int:
        """CLOCK_MONOTONIC in µs."""
        return time.monotonic_ns() // 1000

    def status(self) -> ClockStatus:
        """Sync state, cached for ``cache_seconds``."""
        now = time.monotonic()
        if self._cached and now - self._cached[0] < self.cache_seconds:
            return self._cached[1]
        status = self._query()
        self._cached = (now, status)
        return status

    def _query(self) -> ClockStatus:
        for command, parse in ((CHRONYC, parse_chronyc), (TIMEDATECTL, parse_timedatectl)):
            try:
                done = subprocess.run(  # noqa: S603 (fixed argument list, no shell)
                    command, capture_output=True, text=True, timeout=2, check=False
                )
            except (OSError, subprocess.TimeoutExpired):
                continue
            if done.returncode == 0:
                status = parse(done.stdout.splitlines()[0] if command is CHRONYC else done.stdout)
                if status is not None:
                    return status
        return ClockStatus(ClockSource.NONE, 0, False)

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (the event loop's monotonic clock)."""
        await asyncio.sleep(seconds)
