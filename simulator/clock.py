"""Virtual time: one timeline for a device or a whole fleet, and each device's own clock.

Three layers:

* :class:`VirtualLoop` is an asyncio event loop whose ``time()`` is virtual. With
  ``speed=None`` it runs *as fast as possible* (discrete-event): whenever every task is
  waiting on a timer, the loop jumps straight to the next wake-up instead of sleeping.
  With ``speed=X`` it runs scaled real time: X virtual seconds pass per real second, so an
  8-hour shift at ``speed=120`` takes four minutes. :func:`run` is ``asyncio.run`` on it.
* :class:`Timeline` is the simulated world's true time: the loop's time mapped onto a
  wall-clock epoch. Every device of a fleet shares one timeline, and so does any
  reference (a server's time) that the simulation compares against.
* :class:`SimClock` is one device's :class:`hardware.base.Clock`: the true time seen through
  that device's faults (offset, drift in ppm, jumps, rollback, NTP on or off, reboots).

Limits of the as-fast-as-possible mode, by construction:

* No real network I/O: a socket read is not a timer, so the loop does not know to wait for
  it and jumps ahead, firing every timeout. Use in-process transports (``httpx.ASGITransport``
  and :class:`simulator.network.LinkTransport`) or scaled real time; ``io_grace`` (real
  seconds to wait for I/O before jumping) makes loopback traffic usually work, not always.
* Threads run in real time: work handed to a thread finishes at an unpredictable virtual
  time. Keep simulated work on the loop thread (the simulated camera encodes there).
* Library code that reads ``time.time()`` or ``time.monotonic()`` sees real time.

Real-time work that the loop thread must block on but that is not part of the simulated
world (gpiozero timing a button hold) runs inside :meth:`VirtualLoop.paused`.
"""

from __future__ import annotations

import asyncio
import contextlib
import selectors
import time
from collections.abc import Coroutine, Iterator, Mapping
from typing import Any, TypeVar

from hardware.base import Clock, ClockSource, ClockStatus
from simulator.history import History

T = TypeVar("T")

US = 1_000_000
# 2026-09-21 00:00 UTC: a fixed start makes seeded runs reproducible.
DEFAULT_START_WALL = 1_790_000_000 * US
# What a Pi without RTC or NTP believes at boot (fake-hwclock absent): the epoch.
NO_RTC_WALL = 0


class _VirtualSelector(selectors.BaseSelector):
    """Wraps a real selector; instead of blocking until a timer is due, moves virtual time."""

    def __init__(self, loop: VirtualLoop) -> None:
        self._real = selectors.DefaultSelector()
        self._loop = loop

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._real.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.modify(fileobj, events, data)

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._real.get_map()

    def close(self) -> None:
        self._real.close()

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        loop = self._loop
        if loop.speed is not None:
            return self._real.select(None if timeout is None else timeout / loop.speed)
        # Discrete-event: look for ready I/O (the self-pipe of call_soon_threadsafe included).
        events = self._real.select(loop.io_grace if timeout != 0 else 0)
        if events or timeout == 0:
            return events
        if timeout is None:
            # Nothing scheduled: only a thread or real I/O can wake us; wait for it for real.
            return self._real.select(None)
        loop.advance(timeout)
        return []


class VirtualLoop(asyncio.SelectorEventLoop):
    """An event loop on virtual time: as fast as possible (``speed=None``) or scaled."""

    def __init__(self, speed: float | None = None, io_grace: float = 0.0) -> None:
        if speed is not None and speed <= 0:
            raise ValueError("speed must be positive")
        self.speed = speed
        self.io_grace = io_grace
        self._virtual = 0.0
        self._real_origin = time.monotonic()
        super().__init__(_VirtualSelector(self))

    def time(self) -> float:
        """Virtual seconds since the loop was made."""
        if self.speed is None:
            return self._virtual
        return (time.monotonic() - self._real_origin) * self.speed

    def advance(self, seconds: float) -> None:
        """Move virtual time forward (as-fast-as-possible mode only; the selector calls it)."""
        if self.speed is not None:
            raise RuntimeError("a scaled-real-time loop cannot be advanced by hand")
        self._virtual += max(0.0, seconds)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Stop virtual time while the loop thread blocks on real-time work that belongs
        outside the simulated world (waiting for gpiozero's hold thread): on a scaled loop
        the real seconds spent are taken out of the clock, so that they cost no device
        time. The as-fast-as-possible loop does not move while blocked anyway."""
        start = time.monotonic()
        try:
            yield
        finally:
            if self.speed is not None:
                self._real_origin += time.monotonic() - start


def run(main: Coroutine[Any, Any, T], *, speed: float | None = None, io_grace: float = 0.0) -> T:
    """Run ``main`` to completion on a :class:`VirtualLoop` (like :func:`asyncio.run`)."""
    with asyncio.Runner(loop_factory=lambda: VirtualLoop(speed, io_grace)) as runner:
        return runner.run(main)


class Timeline:
    """The true time of a simulated world: the running loop's time on a wall-clock epoch.

    Bound lazily to the running loop: a :class:`VirtualLoop`'s time counts from that loop's
    start, another loop's from the first reading. If a later reading comes from another loop
    (tests run several), the timeline continues from where it was. Outside any loop it
    stands still.
    """

    def __init__(self, start_wall: int = DEFAULT_START_WALL) -> None:
        self.start_wall = start_wall
        self._loop: asyncio.AbstractEventLoop | None = None
        self._origin = 0.0
        self._elapsed = 0.0

    def now(self) -> float:
        """True seconds since the timeline began."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return self._elapsed
        if loop is not self._loop:
            self._loop = loop
            start = 0.0 if isinstance(loop, VirtualLoop) else loop.time()
            self._origin = start - self._elapsed
        self._elapsed = loop.time() - self._origin
        return self._elapsed

    def wall(self) -> int:
        """True wall time, µs since the epoch (a reference such as a server's)."""
        return self.start_wall + round(self.now() * US)

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of true time."""
        await asyncio.sleep(seconds)


class SimClock(Clock):
    """One device's clock: true time plus offset, drift, jumps and NTP, with a history.

    ``offset`` below is always local wall minus true wall, in µs. With NTP on, the offset is
    ``ntp_residual`` after each poll (every ``ntp_poll`` seconds) and drift is disciplined
    away; a jump made while NTP is on lasts until the next poll. With NTP off the offset
    grows by ``drift_ppm`` µs per second. ``mono`` ticks at the drifting oscillator's rate
    and restarts at each :meth:`reboot`.
    """

    def __init__(
        self,
        timeline: Timeline,
        *,
        ntp: bool = True,
        offset: int = 0,
        drift_ppm: float = 0.0,
        rtc: bool = True,
        ntp_residual: int = 500,
        ntp_poll: float = 64.0,
        sync_threshold: int = 100_000,
        mono_start: int = 5 * US,
    ) -> None:
        self.timeline = timeline
        self.history = History(timeline.now)
        self.drift_ppm = drift_ppm
        self.rtc = rtc
        self.ntp_residual = ntp_residual
        self.ntp_poll = ntp_poll
        self.sync_threshold = sync_threshold
        now = timeline.now()
        self._ntp = ntp
        self._ntp_since = now
        self._offset_at = float(ntp_residual if ntp else offset)
        self._t_ref = now
        # Monotonic µs at true time _mono_t. A real boot's CLOCK_MONOTONIC reads a few
        # seconds when userspace starts; any start is legal, which tests may exercise.
        self.mono_start = mono_start
        self._mono_at = float(mono_start)
        self._mono_t = now
        self.boots = 1

    # ------------------------------------------------------------------ model
    def _rate(self) -> float:
        """Oscillator error as a fraction; NTP disciplines the frequency away."""
        return 0.0 if self._ntp else self.drift_ppm * 1e-6

    def _settle(self) -> float:
        """Fold elapsed time into the offset and monotonic state; returns true seconds now."""
        now = self.timeline.now()
        self._mono_at += (now - self._mono_t) * US * (1 + self._rate())
        self._mono_t = now
        if self._ntp:
            polls = int((now - self._ntp_since) // self.ntp_poll)
            last_poll = self._ntp_since + polls * self.ntp_poll
            if last_poll > self._t_ref:
                self._offset_at = float(self.ntp_residual)
                self._t_ref = last_poll
        else:
            self._offset_at += (now - self._t_ref) * self.drift_ppm
            self._t_ref = now
        return now

    def offset(self) -> int:
        """Local wall minus true wall, µs."""
        self._settle()
        return round(self._offset_at)

    # ------------------------------------------------------------------ Clock
    def wall(self) -> int:
        """Local wall time, µs since the epoch."""
        now = self._settle()
        return self.timeline.start_wall + round(now * US + self._offset_at)

    def mono(self) -> int:
        """Monotonic µs of this boot (from ``mono_start``, 5 s by default, as after a real
        boot)."""
        now = self.timeline.now()
        return round(self._mono_at + (now - self._mono_t) * US * (1 + self._rate()))

    def status(self) -> ClockStatus:
        """Sync state as chrony would report it."""
        offset = self.offset()
        if self._ntp:
            return ClockStatus(ClockSource.NTP, offset, abs(offset) <= self.sync_threshold)
        return ClockStatus(ClockSource.RTC if self.rtc else ClockSource.NONE, offset, False)

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this device's monotonic time."""
        await asyncio.sleep(max(0.0, seconds) / (1 + self._rate()))

    # ------------------------------------------------------------------ inject
    def inject_ntp(self, on: bool) -> None:
        """Switch NTP on (the next poll is now: the offset snaps to the residual) or off."""
        now = self._settle()
        self._ntp = on
        if on:
            self._ntp_since = now
            self._offset_at = float(self.ntp_residual)
            self._t_ref = now
        self.history.add("ntp", on=on, offset=round(self._offset_at))

    def inject_drift(self, ppm: float) -> None:
        """Set the oscillator's error (counts only while NTP is off)."""
        self._settle()
        self.drift_ppm = ppm
        self.history.add("drift", ppm=ppm)

    def inject_offset(self, offset: int) -> None:
        """Set the offset to ``offset`` µs now (NTP, if on, corrects it at its next poll)."""
        self._settle()
        self._offset_at = float(offset)
        self._t_ref = self.timeline.now()
        self.history.add("offset", offset=offset)

    def inject_jump(self, seconds: float) -> None:
        """Step the wall clock by ``seconds``: forward if positive, a rollback if negative.

        The monotonic clock is untouched, as on a real system where someone sets the date.
        """
        self._settle()
        self._offset_at += seconds * US
        self._t_ref = self.timeline.now()
        self.history.add("jump" if seconds >= 0 else "rollback", seconds=seconds)

    def reboot(self) -> None:
        """A new boot: monotonic restarts; without an RTC the wall clock restarts at the epoch
        and stays wrong until NTP syncs (if NTP is on, it syncs at the first poll)."""
        now = self._settle()
        self._mono_at = float(self.mono_start)
        self.boots += 1
        if not self.rtc:
            self._offset_at = NO_RTC_WALL - (self.timeline.start_wall + now * US)
            self._t_ref = now
            if self._ntp:
                self._ntp_since = now  # chrony's first poll comes one interval after boot
        self.history.add("boot", boots=self.boots, offset=round(self._offset_at))
