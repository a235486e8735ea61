"""Assembling the Raspberry Pi board: picamera2 camera, gpiozero controls on lgpio pins, a
fuel gauge over I2C, kernel clock with chrony status, sysfs link state, the SD card."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

from hardware.base import Battery, Board, CameraConfig
from hardware.disk import DirectoryStorage
from hardware.gpio import BlinkTiming, ButtonPins, GpioButtons, GpioIndicator, GpioSpeaker, LedPins
from hardware.pi.battery import Ina219Gauge, Max17048Gauge, open_bus
from hardware.pi.camera import PiCamera
from hardware.pi.clock import PiClock
from hardware.pi.network import PiNetwork


@dataclass(frozen=True, slots=True)
class PiOptions:
    """Wiring of one device; pin defaults are those of :mod:`hardware.gpio`."""

    camera: CameraConfig = field(default_factory=CameraConfig)
    microphone: str | None = "default"
    buttons: ButtonPins = field(default_factory=ButtonPins)
    leds: LedPins = field(default_factory=LedPins)
    buzzer_pin: int = 12
    hold_time: float = 1.0
    gauge: str = "max17048"  # or "ina219"
    gauge_address: int | None = None  # None: the chip's usual address
    cells: int = 1  # in series, for the INA219 (2 on Waveshare's UPS HAT for the Pi 4)
    i2c_bus: int = 1


def pi_board(store: Path, loop: asyncio.AbstractEventLoop, **options: object) -> Board:
    """The Pi's parts; ``options`` are :class:`PiOptions` fields."""
    from gpiozero.pins.lgpio import LGPIOFactory  # noqa: PLC0415 (only on a Pi)

    opts = PiOptions(**options)  # type: ignore[arg-type]  # checked by the dataclass
    factory = LGPIOFactory()
    clock = PiClock()
    bus = open_bus(opts.i2c_bus)
    battery: Battery
    if opts.gauge == "ina219":
        battery = Ina219Gauge(bus, opts.gauge_address or Ina219Gauge.ADDRESS, opts.cells)
    else:
        battery = Max17048Gauge(bus, opts.gauge_address or Max17048Gauge.ADDRESS)
    return Board(
        name="pi",
        camera=PiCamera(opts.camera, opts.microphone),
        buttons=GpioButtons(loop, factory, opts.buttons, hold_time=opts.hold_time),
        indicator=GpioIndicator(factory, opts.leds, BlinkTiming()),
        speaker=GpioSpeaker(opts.buzzer_pin, factory, clock.sleep),
        battery=battery,
        clock=clock,
        storage=DirectoryStorage(store),
        network=PiNetwork(),
    )
