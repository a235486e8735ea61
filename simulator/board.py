"""A whole simulated device: every fake, wired together like the real board.

Wiring: the camera's capture and the link's transfers draw on the battery; an empty
battery cuts the power rail; a cut stops the camera, settles the medium (FAULTS 2), darkens
the LEDs and then runs the harness's ``power.on_cut`` hooks (append the agent's ``kill``);
a mid-operation cut injected into the medium cuts the whole rail.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
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
    root_dir: Path,
    clock: SimClock,
    seed: int = 0,
    **options: object,
) -> SimulatedBoard:
    """Build a simulated device on ``clock`` whose evidence medium is ``root_dir``.

    ``options`` are the fields of :class:`BoardOptions`. Call it on the event loop that will
    run the agent (or pass ``loop=``): button callbacks are delivered there.
    """
    opts = BoardOptions(**options)  # type: ignore[arg-type]  # checked by the dataclass
    loop = opts.loop or asyncio.get_running_loop()
    camera = SimCamera(clock, device_id, opts.camera, mode=opts.camera_mode)
    controls = SimControls(loop, clock)
    battery = SimBattery(clock, capacity_mah=opts.battery_mah, percent=opts.battery_percent)
    medium = SimulatedMedium(
        root_dir,
        History(clock.timeline.now),
        capacity=opts.storage_capacity,
        seed=seed,
        cut_policy=opts.cut_policy,
    )
    link = Link(History(clock.timeline.now), seed=seed, kind=opts.link_kind)
    power = PowerSupply(clock, battery)

    camera.listeners.append(battery.set_recording)
    link.on_activity.append(battery.set_uploading)
    medium.on_cut = lambda: power.cut("cut inside a storage operation")
    power.on_cut.extend(
        [
            camera.power_cut,
            medium.power_cut,
            lambda: controls.indicator.show(LedPattern.OFF),
            lambda: battery.set_recording(False),
        ]
    )
    power.on_restore.append(medium.power_on)
    battery.arm()
    return SimulatedBoard(
        name="simulator",
        camera=camera,
        buttons=controls.buttons,
        indicator=controls.indicator,
        speaker=controls.speaker,
        battery=battery,
        clock=clock,
        storage=medium,
        network=SimNetwork(link),
        device_id=device_id,
        sim_camera=camera,
        controls=controls,
        sim_battery=battery,
        sim_clock=clock,
        medium=medium,
        link=link,
        power=power,
    )
