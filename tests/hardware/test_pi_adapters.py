"""The Pi adapters' logic, against register models of the chips and recorded tool output."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path

import pytest

from hardware.backends import UnknownBackendError, load_board
from hardware.base import ClockSource, HardwareError
from hardware.pi.battery import Ina219Gauge, Max17048Gauge, swap16
from hardware.pi.clock import parse_chronyc, parse_timedatectl
from hardware.pi.network import PiNetwork


class RegisterChip:
    """An I2C chip as a register file, answering in SMBus (little-endian) word order."""

    def __init__(self, address: int, registers: dict[int, int]) -> None:
        self.address = address
        self.registers = registers
        self.reads: list[int] = []

    def read_word_data(self, i2c_addr: int, register: int) -> int:
        if i2c_addr != self.address:
            raise OSError(121, "Remote I/O error")  # nothing answers at that address
        self.reads.append(register)
        return swap16(self.registers[register])

    def write_word_data(self, i2c_addr: int, register: int, value: int) -> None:
        self.registers[register] = swap16(value)


def test_max17048_decodes_voltage_percent_and_charge_rate() -> None:
    # 3.9 V = 49920 * 78.125 µV; 87.5 % = 0x5780 / 256; +10.4 %/h = 50 * 0.208
    chip = RegisterChip(0x36, {0x02: 49920, 0x04: 0x5780, 0x16: 50})
    state = Max17048Gauge(chip).read()
    assert (state.voltage_mv, state.percent, state.charging) == (3900, 87.5, True)
    chip.registers[0x16] = 0x10000 - 50  # discharging
    assert not Max17048Gauge(chip).read().charging


def test_ina219_estimates_percent_from_bus_voltage() -> None:
    chip = RegisterChip(0x43, {0x02: (3600 // 4) << 3, 0x01: 0xFFF0})
    state = Ina219Gauge(chip).read()
    assert state.voltage_mv == 3600
    assert state.percent == 50.0
    assert not state.charging
    chip.registers[0x01] = 0x0010  # current into the pack
    assert Ina219Gauge(chip).read().charging


def test_ina219_on_a_two_cell_pack_reports_per_cell() -> None:
    chip = RegisterChip(0x42, {0x02: (7800 // 4) << 3, 0x01: 0xFFF0})
    state = Ina219Gauge(chip, 0x42, cells=2).read()
    assert state.voltage_mv == 3900
    assert state.percent == 75.0


def test_gauge_absent_is_a_hardware_error() -> None:
    with pytest.raises(HardwareError, match="0x36"):
        Max17048Gauge(RegisterChip(0x42, {})).read()


CHRONY_SYNCED = (
    "50484330,PHC0,1,1709727533.139866748,0.000004315,-0.000003372,0.000002759,"
    "1.274,-0.005,0.161,0.000000001,0.000029493,8.0,Normal"
)
CHRONY_UNSYNCED = (
    "00000000,,0,0.000000000,0.000000000,0.0,0.0,0.0,0.0,0.0,1.0,1.0,0.0,Not synchronised"
)


def test_chronyc_offset_sign_and_sync() -> None:
    status = parse_chronyc(CHRONY_SYNCED)
    assert status is not None
    assert status.source is ClockSource.NTP
    assert status.synced
    assert status.offset == -4  # "slow by 4.3 µs": local minus reference is negative
    unsynced = parse_chronyc(CHRONY_UNSYNCED)
    assert unsynced is not None
    assert not unsynced.synced
    assert parse_chronyc("506 Cannot talk to daemon") is None


def test_timedatectl_properties() -> None:
    status = parse_timedatectl("NTPSynchronized=yes\nCanNTP=yes\n")
    assert status is not None
    assert status.synced
    assert parse_timedatectl("garbage") is None


def test_link_state_from_sysfs(tmp_path: Path) -> None:
    for iface, state in (("wlan0", "down"), ("eth0", "up")):
        (tmp_path / iface).mkdir()
        (tmp_path / iface / "operstate").write_text(state + "\n")
    (tmp_path / "wlan0" / "wireless").mkdir()
    net = PiNetwork(("wlan0", "eth0"), sysfs=tmp_path)
    assert (net.state().up, net.state().kind) == (True, "ethernet")
    (tmp_path / "eth0" / "operstate").write_text("down\n")
    assert (net.state().up, net.state().kind) == (False, "wifi")


async def test_unknown_backend_is_named() -> None:
    with pytest.raises(UnknownBackendError, match="known: pi"):
        load_board("toaster", store=Path("/nonexistent"))


@pytest.mark.skipif(
    importlib.util.find_spec("picamera2") is not None, reason="picamera2 is installed here"
)
async def test_pi_backend_without_picamera2_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(HardwareError, match="cannot load"):
        load_board("pi", store=tmp_path, loop=asyncio.get_running_loop())
