"""Battery model and power rail."""

from __future__ import annotations

import asyncio

import pytest

from simulator.clock import SimClock, Timeline, run
from simulator.power import OCV_CURVE, PowerSupply, SimBattery, open_circuit_mv


def test_voltage_curve_rises_with_charge() -> None:
    volts = [open_circuit_mv(p) for p in range(0, 101, 5)]
    assert volts == sorted(volts)
    assert volts[0] == OCV_CURVE[0][1]
    assert volts[-1] == OCV_CURVE[-1][1]


def test_draw_by_activity_integrates_over_virtual_time() -> None:
    async def main() -> None:
        clock = SimClock(Timeline())
        battery = SimBattery(clock, capacity_mah=1000, idle_ma=100, recording_ma=400)
        await asyncio.sleep(3600)
        assert battery.percent == pytest.approx(90.0)
        battery.set_recording(True)
        await asyncio.sleep(3600)
        assert battery.percent == pytest.approx(40.0)
        idle_mv = open_circuit_mv(40.0)
        reading = battery.read()
        assert reading.voltage_mv < idle_mv  # the load pulls the voltage down
        assert reading.temperature_c is not None
        assert reading.temperature_c > battery.ambient_c
        assert not reading.charging

    run(main())


def test_charging_raises_the_charge_and_is_reported() -> None:
    async def main() -> None:
        battery = SimBattery(SimClock(Timeline()), capacity_mah=1000, percent=10, idle_ma=100)
        battery.inject_charging(True)
        await asyncio.sleep(1800)  # +1500 mA -100 mA for half an hour
        assert battery.percent == pytest.approx(80.0)
        assert battery.read().charging
        await asyncio.sleep(3600)
        assert battery.percent == 100.0  # full stays full

    run(main())


def test_empty_battery_cuts_the_rail_at_the_predicted_time() -> None:
    async def main() -> None:
        clock = SimClock(Timeline())
        battery = SimBattery(clock, capacity_mah=600, percent=50, idle_ma=100, recording_ma=200)
        power = PowerSupply(clock, battery)
        killed: list[float] = []
        power.on_cut.append(lambda: killed.append(clock.timeline.now()))
        battery.set_recording(True)  # 300 mA from 300 mAh: one hour
        await asyncio.sleep(4000)
        assert killed == [pytest.approx(3600.0, abs=1)]
        assert not power.on
        assert power.history.of("cut")[0].detail["reason"] == "battery empty"

    run(main())


def test_cut_is_idempotent_and_restore_reboots_the_clock() -> None:
    async def main() -> None:
        clock = SimClock(Timeline())
        power = PowerSupply(clock, SimBattery(clock))
        calls: list[str] = []
        power.on_cut.append(lambda: calls.append("cut"))
        power.on_restore.append(lambda: calls.append("restore"))
        await asyncio.sleep(100)
        power.cut()
        power.cut()
        power.restore()
        assert calls == ["cut", "restore"]
        assert clock.boots == 2
        assert clock.mono() == 5_000_000

    run(main())


def test_inject_level_sets_the_charge_and_rearms_the_empty_cut() -> None:
    async def main() -> float:
        clock = SimClock(Timeline())
        battery = SimBattery(clock, capacity_mah=1000, idle_ma=500)
        power = PowerSupply(clock, battery)
        battery.arm()
        battery.inject_level(5.0)  # 50 mAh at 500 mA: six minutes left
        assert battery.read().percent == pytest.approx(5.0)
        await asyncio.sleep(350)
        assert power.on
        await asyncio.sleep(20)
        assert not power.on
        return battery.history.of("empty")[0].at

    assert run(main()) == pytest.approx(360, abs=1)


def test_an_empty_battery_cannot_boot_until_charging_and_an_off_device_draws_nothing() -> None:
    async def main() -> None:
        clock = SimClock(Timeline())
        battery = SimBattery(clock, capacity_mah=100, percent=10, idle_ma=100, charge_ma=600)
        power = PowerSupply(clock, battery)
        battery.arm()
        await asyncio.sleep(400)  # 10 mAh at 100 mA: empty after 360 s
        assert not power.on
        assert battery.percent == 0
        assert power.restore() is False
        assert not power.on
        assert power.history.kinds()[-1] == "restore_refused"
        battery.inject_charging(True)
        await asyncio.sleep(60)  # 10 mAh in at 600 mA while off: nothing drawn
        assert battery.percent == pytest.approx(10.0)
        assert power.restore() is True
        battery.inject_charging(False)
        await asyncio.sleep(300)
        assert power.on
        assert battery.percent == pytest.approx(10 - 100 * 300 / 3600)  # mAh = % of 100 mAh
        power.cut("switched off")
        before = battery.percent
        await asyncio.sleep(3600)
        assert battery.percent == before

    run(main())
