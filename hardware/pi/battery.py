"""Battery fuel gauges of common UPS HATs, over I2C with smbus2.

* :class:`Max17048Gauge`: the MAX17048 (or the register-compatible MAX17043/17044) at
  address 0x36, as on Geekworm's X728/X1200-series UPS boards and Adafruit's MAX17048
  breakout. VCELL (0x02) is 78.125 µV per bit; SOC (0x04) is 1/256 % per bit; CRATE
  (0x16) is 0.208 %/h per bit, signed, positive while charging.
* :class:`Ina219Gauge`: the INA219 current/voltage monitor of Waveshare's UPS HATs: at
  0x43 over one cell on the UPS HAT (C) and (D) for the Pi Zero, at 0x42 over two cells in
  series on the UPS HAT for the Pi 4 (``cells=2``). It has no fuel gauge: the percentage is
  estimated from the voltage per cell (linear from 3.0 to 4.2 V, as Waveshare's own code
  does), charging from the sign of the shunt current.

``BatteryState.voltage_mv`` is the voltage of one cell for both chips, so that a reading
means the same whatever the pack.

SMBus sends words little-endian while both chips are big-endian: words are byte-swapped.
The bus is any object with ``read_word_data`` and ``write_word_data`` (smbus2.SMBus);
:func:`open_bus` imports smbus2 only when called.
"""

from __future__ import annotations

from typing import Protocol

from hardware.base import Battery, BatteryState, HardwareError


class WordBus(Protocol):
    """The part of smbus2.SMBus that the gauges use."""

    def read_word_data(self, i2c_addr: int, register: int) -> int:
        """Read a 16-bit register (SMBus byte order)."""
        ...

    def write_word_data(self, i2c_addr: int, register: int, value: int) -> None:
        """Write a 16-bit register (SMBus byte order)."""
        ...


def open_bus(number: int = 1) -> WordBus:
    """Open I2C bus ``number`` with smbus2 (the Pi's header I2C is bus 1)."""
    try:
        from smbus2 import SMBus  # noqa: PLC0415 (vendor library imported only when chosen)
    except ImportError as exc:
        raise HardwareError("smbus2 is not installed (pip install 'unbroken[pi]')") from exc
    bus: WordBus = SMBus(number)
    return bus


def swap16(word: int) -> int:
    """SMBus little-endian word <-> the chip's big-endian register."""
    return ((word & 0xFF) << 8) | (word >> 8)


def _signed16(value: int) -> int:
    return value - 0x10000 if value & 0x8000 else value


class Max17048Gauge(Battery):
    """MAX17048 ModelGauge fuel gauge."""

    ADDRESS = 0x36
    VCELL, SOC, CRATE = 0x02, 0x04, 0x16

    def __init__(self, bus: WordBus, address: int = ADDRESS) -> None:
        self.bus = bus
        self.address = address

    def _register(self, register: int) -> int:
        try:
            return swap16(self.bus.read_word_data(self.address, register))
        except OSError as exc:
            raise HardwareError(f"fuel gauge at {self.address:#x}: {exc}") from exc

    def read(self) -> BatteryState:
        """Percent, cell voltage and charging (from the charge rate's sign)."""
        volts_uv = self._register(self.VCELL) * 78.125
        percent = min(100.0, self._register(self.SOC) / 256)
        rate = _signed16(self._register(self.CRATE)) * 0.208
        return BatteryState(round(percent, 2), round(volts_uv / 1000), rate > 0.0)


class Ina219Gauge(Battery):
    """INA219 on a Li-ion pack of ``cells`` in series: voltage measured, percentage estimated."""

    ADDRESS = 0x43  # UPS HAT (C)/(D), one cell; the Pi 4 UPS HAT (two cells) is at 0x42
    SHUNT, BUS = 0x01, 0x02
    EMPTY_MV, FULL_MV = 3000, 4200  # per cell

    def __init__(self, bus: WordBus, address: int = ADDRESS, cells: int = 1) -> None:
        if cells < 1:
            raise ValueError("a pack has at least one cell")
        self.bus = bus
        self.address = address
        self.cells = cells

    def _register(self, register: int) -> int:
        try:
            return swap16(self.bus.read_word_data(self.address, register))
        except OSError as exc:
            raise HardwareError(f"INA219 at {self.address:#x}: {exc}") from exc

    def read(self) -> BatteryState:
        """Bus voltage (4 mV per bit, bits 15..3) per cell, estimated percent, charging."""
        cell_mv = (self._register(self.BUS) >> 3) * 4 / self.cells
        shunt = _signed16(self._register(self.SHUNT))  # 10 µV per bit; > 0 into the pack
        span = self.FULL_MV - self.EMPTY_MV
        percent = min(100.0, max(0.0, 100 * (cell_mv - self.EMPTY_MV) / span))
        return BatteryState(round(percent, 1), round(cell_mv), shunt > 0)
