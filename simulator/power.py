"""Power: a battery model on the virtual clock, and the device's power rail with cuts.

:class:`SimBattery` integrates current over the simulation's true time: a base draw when
idle, more while the camera captures, more while the radio uploads, and a charger that
pushes current back. Its voltage follows a Li-ion open-circuit curve minus the drop over
the cell's internal resistance; its temperature rises with the current. At 0 % the
protection circuit opens and the rail is cut.

:class:`PowerSupply` is that rail. :meth:`PowerSupply.cut` is a power loss: the camera
stops mid-frame, the medium settles unsynced data per FAULTS 2 and refuses everything
after, and each ``on_cut`` callback runs (the harness kills the agent there, without
cleanup). :meth:`PowerSupply.restore` is the next boot.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable

from hardware.base import Battery, BatteryState
from simulator.clock import SimClock
from simulator.history import History

# Open-circuit voltage of a Li-ion cell (mV) against state of charge (%).
OCV_CURVE: tuple[tuple[float, int], ...] = (
    (0, 3000),
    (5, 3450),
    (10, 3600),
    (20, 3700),
    (40, 3780),
    (60, 3870),
    (80, 4000),
    (100, 4200),
)


def open_circuit_mv(percent: float) -> float:
    """Cell voltage at rest for ``percent`` state of charge (linear between curve points)."""
    p = min(100.0, max(0.0, percent))
    for (p0, v0), (p1, v1) in itertools.pairwise(OCV_CURVE):
        if p <= p1:
            return v0 + (v1 - v0) * (p - p0) / (p1 - p0)
    return float(OCV_CURVE[-1][1])


class SimBattery(Battery):
    """A battery with a fuel gauge; draw by activity, charging, voltage and temperature."""

    def __init__(
        self,
        clock: SimClock,
        *,
        capacity_mah: float = 3400.0,
        percent: float = 100.0,
        idle_ma: float = 180.0,
        recording_ma: float = 420.0,
        uploading_ma: float = 250.0,
        charge_ma: float = 1500.0,
        internal_mohm: float = 150.0,
        ambient_c: float = 25.0,
        heating_c_per_a: float = 12.0,
    ) -> None:
        self.clock = clock
        self.history = History(clock.timeline.now)
        self.capacity_mah = capacity_mah
        self.idle_ma = idle_ma
        self.recording_ma = recording_ma
        self.uploading_ma = uploading_ma
        self.charge_ma = charge_ma
        self.internal_mohm = internal_mohm
        self.ambient_c = ambient_c
        self.heating_c_per_a = heating_c_per_a
        self.on_empty: list[Callable[[], None]] = []
        self.powered = True  # the rail is on: the device draws current
        self.recording = False
        self.uploading = False
        self.charging = False
        self._mah = capacity_mah * percent / 100
        self._t = clock.timeline.now()
        self._empty_fired = False
        self._timer: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------------ model
    def draw_ma(self) -> float:
        """Current out of the battery now (negative while the charger wins); a device with
        its rail off draws nothing."""
        load = 0.0
        if self.powered:
            load += self.idle_ma
            load += self.recording_ma if self.recording else 0.0
            load += self.uploading_ma if self.uploading else 0.0
        return load - (self.charge_ma if self.charging else 0.0)

    def empty(self) -> bool:
        """No charge left."""
        self._integrate()
        return self._mah <= 1e-6

    def _integrate(self) -> None:
        now = self.clock.timeline.now()
        self._mah -= self.draw_ma() * (now - self._t) / 3600
        self._mah = min(self.capacity_mah, max(0.0, self._mah))
        self._t = now

    @property
    def percent(self) -> float:
        """State of charge now."""
        self._integrate()
        return 100 * self._mah / self.capacity_mah

    def hours_left(self) -> float | None:
        """Hours to empty at the present draw, or None when not discharging."""
        draw = self.draw_ma()
        self._integrate()
        return self._mah / draw if draw > 0 else None

    def read(self) -> BatteryState:
        """What the fuel gauge reports."""
        percent = self.percent
        amps = self.draw_ma() / 1000
        volts = open_circuit_mv(percent) - amps * self.internal_mohm
        temperature = self.ambient_c + abs(amps) * self.heating_c_per_a
        return BatteryState(round(percent, 2), round(volts), self.charging, round(temperature, 1))

    # ------------------------------------------------------------------ activity and inject
    def _change(self, what: str, on: bool) -> None:
        self._integrate()
        setattr(self, what, on)
        self.history.add(what, on=on, percent=round(self.percent, 3))
        if self._mah > 0:
            self._empty_fired = False
        self.arm()

    def set_powered(self, on: bool) -> None:
        """The power rail is switched on or off (the power supply calls it)."""
        self._change("powered", on)

    def set_recording(self, on: bool) -> None:
        """The camera captures (or stops)."""
        self._change("recording", on)

    def set_uploading(self, on: bool) -> None:
        """The radio transfers (or goes quiet)."""
        self._change("uploading", on)

    def inject_charging(self, on: bool) -> None:
        """Plug the charger in, or pull it out."""
        self._change("charging", on)

    def inject_percent(self, percent: float) -> None:
        """Set the state of charge now (a swapped or worn battery)."""
        self._integrate()
        self._mah = self.capacity_mah * min(100.0, max(0.0, percent)) / 100
        self.history.add("percent", percent=percent)
        self._empty_fired = False
        self.arm()

    def inject_level(self, percent: float) -> None:
        """Set the state of charge now: :meth:`inject_percent`, by the gauge's word."""
        self.inject_percent(percent)

    def inject_ambient(self, celsius: float) -> None:
        """Set the ambient temperature (a hot car, a winter night)."""
        self.ambient_c = celsius
        self.history.add("ambient", celsius=celsius)

    # ------------------------------------------------------------------ empty
    def arm(self) -> None:
        """Schedule the empty check at the predicted empty time on the running loop (a no-op
        outside a loop; every activity change re-arms)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        hours = self.hours_left()
        if hours is None:
            return
        self._timer = loop.call_later(hours * 3600, self._check_empty)

    def _check_empty(self) -> None:
        self._timer = None
        self._integrate()
        if self._mah <= 1e-6 and not self._empty_fired:
            self._empty_fired = True
            self.history.add("empty")
            for callback in self.on_empty:
                callback()
        elif self._mah > 1e-6:
            self.arm()


class PowerSupply:
    """The device's power rail: cut it and everything stops where it is."""

    def __init__(self, clock: SimClock, battery: SimBattery) -> None:
        self.clock = clock
        self.battery = battery
        self.history = History(clock.timeline.now)
        self.on = True
        self.cuts = 0
        # Run at each cut, in order: the parts first (camera, medium), then the harness's
        # hooks (e.g. the agent's kill), so that nothing the dying agent does can persist.
        self.on_cut: list[Callable[[], None]] = []
        self.on_restore: list[Callable[[], None]] = []
        battery.on_empty.append(lambda: self.cut("battery empty"))

    def cut(self, reason: str = "power cut") -> None:
        """Cut the power now (idempotent while off)."""
        if not self.on:
            return
        self.on = False
        self.cuts += 1
        self.history.add("cut", reason=reason)
        for callback in list(self.on_cut):
            callback()
        self.battery.set_powered(False)

    def restore(self) -> bool:
        """Power returns: a new boot (the clock's monotonic time restarts).

        An empty battery without a charger cannot boot the device: the rail stays off and
        False is returned (the attempt is in the history).
        """
        if self.on:
            return True
        if self.battery.empty() and not self.battery.charging:
            self.history.add("restore_refused", reason="battery empty")
            return False
        self.on = True
        self.battery.set_powered(True)
        self.clock.reboot()
        self.history.add("restore")
        for callback in list(self.on_restore):
            callback()
        return True
