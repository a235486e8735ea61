"""The virtual loop and the device clock's fault model."""

from __future__ import annotations

import asyncio
import time

import pytest

from hardware.base import ClockSource
from simulator.clock import NO_RTC_WALL, US, SimClock, Timeline, VirtualLoop, run


def test_fast_loop_jumps_over_an_eight_hour_shift() -> None:
    async def shift() -> float:
        loop = asyncio.get_running_loop()
        async with asyncio.TaskGroup() as group:
            for period in (1.0, 30.0, 60.0):
                group.create_task(_tick(period, 8 * 3600), name=f"tick-{period}")
        return loop.time()

    started = time.perf_counter()
    assert run(shift()) == pytest.approx(8 * 3600, abs=1)
    assert time.perf_counter() - started < 5


async def _tick(period: float, until: float) -> None:
    loop = asyncio.get_running_loop()
    while loop.time() + period <= until:
        await asyncio.sleep(period)


def test_fast_loop_orders_timers_like_real_time() -> None:
    async def main() -> list[str]:
        order: list[str] = []

        async def at(delay: float, name: str) -> None:
            await asyncio.sleep(delay)
            order.append(name)

        async with asyncio.TaskGroup() as group:
            for delay, name in ((3.0, "c"), (1.0, "a"), (2.0, "b")):
                group.create_task(at(delay, name), name=name)
        return order

    assert run(main()) == ["a", "b", "c"]


def test_scaled_loop_runs_speed_times_real_time() -> None:
    async def main() -> float:
        await asyncio.sleep(5.0)
        return asyncio.get_running_loop().time()

    started = time.perf_counter()
    virtual = run(main(), speed=50)
    real = time.perf_counter() - started
    assert virtual >= 5.0
    assert 0.08 < real < 1.0  # 5 virtual seconds at 50x: 0.1 s real


def test_threads_still_wake_the_fast_loop() -> None:
    async def main() -> str:
        return await asyncio.to_thread(lambda: "from a thread")

    assert run(main()) == "from a thread"


def test_loop_cannot_be_advanced_by_hand_in_scaled_mode() -> None:
    loop = VirtualLoop(speed=2)
    try:
        with pytest.raises(RuntimeError):
            loop.advance(1)
    finally:
        loop.close()


def test_drift_without_ntp_grows_the_offset_and_ntp_removes_it() -> None:
    async def main() -> None:
        clock = SimClock(Timeline(), ntp=False, drift_ppm=1000)
        await asyncio.sleep(2000)  # true seconds
        assert clock.offset() == pytest.approx(2 * US, rel=1e-6)
        status = clock.status()
        assert status.source is ClockSource.RTC
        assert not status.synced
        clock.inject_ntp(True)
        assert clock.status().offset == clock.ntp_residual
        assert clock.status().synced

    run(main())


def test_jump_lasts_until_the_next_ntp_poll() -> None:
    async def main() -> None:
        clock = SimClock(Timeline(), ntp=True, ntp_poll=64)
        await asyncio.sleep(10)
        clock.inject_jump(-86400)
        assert clock.offset() == pytest.approx(-86400 * US + clock.ntp_residual)
        assert not clock.status().synced
        await asyncio.sleep(60)  # the poll at 64 s corrects it
        assert clock.offset() == clock.ntp_residual

    run(main())


def test_rollback_moves_wall_back_while_mono_advances() -> None:
    async def main() -> None:
        clock = SimClock(Timeline(), ntp=False)
        wall0, mono0 = clock.wall(), clock.mono()
        await clock.sleep(1)
        clock.inject_jump(-3600)
        assert clock.wall() < wall0
        assert clock.mono() == mono0 + US
        assert [h.kind for h in clock.history] == ["rollback"]

    run(main())


def test_mono_runs_fast_with_drift_and_sleep_uses_it() -> None:
    async def main() -> None:
        timeline = Timeline()
        clock = SimClock(timeline, ntp=False, drift_ppm=500)
        t0, m0 = timeline.now(), clock.mono()
        await clock.sleep(1000)  # device seconds
        assert clock.mono() - m0 == pytest.approx(1000 * US, abs=2)
        assert timeline.now() - t0 == pytest.approx(1000 / 1.0005)

    run(main())


def test_reboot_restarts_mono_and_without_rtc_wall_starts_at_epoch() -> None:
    async def main() -> None:
        clock = SimClock(Timeline(), ntp=True, rtc=False, ntp_poll=30)
        await asyncio.sleep(100)
        clock.reboot()
        assert clock.mono() == 5 * US
        assert abs(clock.wall() - NO_RTC_WALL) < US
        await asyncio.sleep(31)
        assert clock.offset() == clock.ntp_residual  # NTP synced at its first poll

    run(main())


def test_timeline_is_shared_by_a_fleet_and_continues_across_loops() -> None:
    timeline = Timeline(start_wall=1_000 * US)
    clocks = [SimClock(timeline, ntp=False, offset=i * US) for i in range(3)]

    async def main() -> list[int]:
        await asyncio.sleep(10)
        return [c.wall() for c in clocks]

    walls = run(main())
    assert walls == [1_010 * US + i * US for i in range(3)]
    assert run(main()) == [1_020 * US + i * US for i in range(3)]
    assert timeline.wall() == 1_020 * US  # outside a loop: stands still


def test_mono_starts_where_told_and_each_boot_starts_there_again() -> None:
    async def main() -> None:
        clock = SimClock(Timeline(), mono_start=987_654_321)
        assert clock.mono() == 987_654_321
        await clock.sleep(2)
        assert clock.mono() == 987_654_321 + 2 * US
        clock.reboot()
        assert clock.mono() == 987_654_321

    run(main())
