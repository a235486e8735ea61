"""A whole simulated device: every fake, wired together like the real board.

``board = simulated_board("dev-1", Path("store"), clock)`` gives a :class:`SimulatedBoard`:
a :class:`hardware.base.Board` for the agent that also holds the fakes (``board.medium``,
``board.power``...). ``board, handles = simulated_board(...)`` unpacks it into the board
and its :class:`SimHandles`, for callers that keep the two apart.

Wiring: the camera's capture and the link's transfers draw on the battery; an empty
battery cuts the power rail; a cut stops the camera, settles the medium (FAULTS 2), darkens
the LEDs and then runs the harness's ``power.on_cut`` hooks (append the agent's ``kill``);
a mid-operation cut injected into the medium cuts the whole rail.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from hardware.base import Board, CameraConfig, LedPattern
from simulator.camera import Mode, SimCamera
from simulator.clock import SimClock
from simulator.controls import SimControls
from simulator.history import Happening, History
from simulator.network import Link, SimNetwork
from simulator.power import PowerSupply, SimBattery
from simulator.storage import CutPolicy, SimulatedMedium


@dataclass(frozen=True, slots=True)
class BoardOptions:
    """What can be chosen about a simulated board (all optional)."""

    camera: CameraConfig = field(default_factory=CameraConfig)
    camera_mode: Mode = "live"
    storage_capacity: int | None = None  # bytes; None: the host directory's
    cut_policy: CutPolicy = "mixed"
    battery_mah: float = 3400.0
    battery_percent: float = 100.0
    link_kind: str = "wifi"
    loop: asyncio.AbstractEventLoop | None = None  # for gpiozero's callbacks; default running


@dataclass(frozen=True, slots=True)
class SimHandles:
    """The fakes behind a simulated board, for a test or the command line to drive them
    (their ``inject_*`` methods) and to read their ``history``."""

    camera: SimCamera
    controls: SimControls
    battery: SimBattery
    clock: SimClock
    medium: SimulatedMedium
    link: Link
    power: PowerSupply


@dataclass(slots=True)
class SimulatedBoard(Board):
    """A :class:`hardware.base.Board` whose parts are fakes, with handles to drive them."""

    device_id: str
    sim_camera: SimCamera
    controls: SimControls
    sim_battery: SimBattery
    sim_clock: SimClock
    medium: SimulatedMedium
    link: Link
    power: PowerSupply

    @property
    def handles(self) -> SimHandles:
        """The fakes, apart from the board."""
        return SimHandles(
            camera=self.sim_camera,
            controls=self.controls,
            battery=self.sim_battery,
            clock=self.sim_clock,
            medium=self.medium,
            link=self.link,
            power=self.power,
        )

    def __iter__(self) -> Iterator[Board | SimHandles]:
        """``board, handles = simulated_board(...)``."""
        return iter((self, self.handles))

    def history(self) -> list[tuple[str, Happening]]:
        """Every part's history merged in time order, as (part, entry)."""
        parts: dict[str, History] = {
            "camera": self.sim_camera.history,
            "controls": self.controls.history,
            "battery": self.sim_battery.history,
            "clock": self.sim_clock.history,
            "storage": self.medium.history,
            "network": self.link.history,
            "power": self.power.history,
        }
        merged = [(name, e) for name, h in parts.items() for e in h]
        return sorted(merged, key=lambda item: item[1].at)

    def close(self) -> None:
        """Release the mock pins and gpiozero's threads."""
        self.controls.close()


def simulated_board(
    device_id: str,
    store_dir: Path,
    clock: SimClock,
    seed: int = 0,
    *,
    camera: CameraConfig | None = None,
    replay: bool = False,
    capacity: int | None = None,
    **options: object,
) -> SimulatedBoard:
    """Build a simulated device on ``clock`` whose evidence medium is ``store_dir``.

    ``seed`` drives every random fault (power-cut fates, link resets). ``camera`` sets the
    capture; ``replay`` uses the cached clip instead of live encoding (fleets);
    ``capacity`` limits the medium to that many bytes. Other ``options`` are the fields of
    :class:`BoardOptions`. Call it on the event loop that will run the agent (or pass
    ``loop=``): button callbacks are delivered there.
    """
    opts = BoardOptions(**options)  # type: ignore[arg-type]  # checked by the dataclass
    if camera is not None:
        opts = replace(opts, camera=camera)
    if replay:
        opts = replace(opts, camera_mode="replay")
    if capacity is not None:
        opts = replace(opts, storage_capacity=capacity)
    loop = opts.loop or asyncio.get_running_loop()
    sim_camera = SimCamera(clock, device_id, opts.camera, mode=opts.camera_mode)
    controls = SimControls(loop, clock)
    battery = SimBattery(clock, capacity_mah=opts.battery_mah, percent=opts.battery_percent)
    medium = SimulatedMedium(
        store_dir,
        History(clock.timeline.now),
        capacity=opts.storage_capacity,
        seed=seed,
        cut_policy=opts.cut_policy,
    )
    link = Link(History(clock.timeline.now), seed=seed, kind=opts.link_kind)
    power = PowerSupply(clock, battery)

    sim_camera.listeners.append(battery.set_recording)
    link.on_activity.append(battery.set_uploading)
    medium.on_cut = lambda: power.cut("cut inside a storage operation")
    power.on_cut.extend(
        [
            sim_camera.power_cut,
            medium.power_cut,
            lambda: controls.indicator.show(LedPattern.OFF),
            lambda: battery.set_recording(False),
        ]
    )
    power.on_restore.append(medium.power_on)
    battery.arm()
    return SimulatedBoard(
        name="simulator",
        camera=sim_camera,
        buttons=controls.buttons,
        indicator=controls.indicator,
        speaker=controls.speaker,
        battery=battery,
        clock=clock,
        storage=medium,
        network=SimNetwork(link),
        device_id=device_id,
        sim_camera=sim_camera,
        controls=controls,
        sim_battery=battery,
        sim_clock=clock,
        medium=medium,
        link=link,
        power=power,
    )
