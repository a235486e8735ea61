"""Buttons, LEDs and buzzer through gpiozero's MockFactory."""

from __future__ import annotations

import asyncio
import threading

import pytest

from hardware.base import ButtonName, LedPattern, Prompt
from simulator.clock import SimClock, Timeline
from simulator.controls import SimControls


@pytest.fixture
async def controls() -> SimControls:
    c = SimControls(asyncio.get_running_loop(), SimClock(Timeline()))
    yield c  # type: ignore[misc]
    c.close()


async def test_press_and_hold_reach_the_loop_thread(controls: SimControls) -> None:
    got: list[tuple[str, int]] = []
    loop_thread = threading.get_ident()
    controls.buttons.on_press(
        ButtonName.INCIDENT, lambda: got.append(("press", threading.get_ident()))
    )
    controls.buttons.on_hold(ButtonName.RECORD, lambda: got.append(("hold", threading.get_ident())))
    controls.press("incident")
    controls.hold("record")
    await asyncio.sleep(0.01)
    assert got == [("press", loop_thread), ("hold", loop_thread)]


async def test_a_hold_is_not_also_a_press(controls: SimControls) -> None:
    got: list[str] = []
    controls.buttons.on_press(ButtonName.BOOKMARK, lambda: got.append("press"))
    controls.buttons.on_hold(ButtonName.BOOKMARK, lambda: got.append("hold"))
    controls.hold(ButtonName.BOOKMARK)
    controls.press(ButtonName.BOOKMARK)
    await asyncio.sleep(0.01)
    assert got == ["hold", "press"]
    assert controls.history.kinds() == ["hold", "press"]


async def test_no_callback_without_a_press(controls: SimControls) -> None:
    got: list[str] = []
    controls.buttons.on_press(ButtonName.INCIDENT, lambda: got.append("press"))
    controls.press(ButtonName.BOOKMARK)
    await asyncio.sleep(0.01)
    assert got == []


@pytest.mark.parametrize("pattern", list(LedPattern))
async def test_every_pattern_reads_back_from_the_pins(
    controls: SimControls, pattern: LedPattern
) -> None:
    controls.indicator.show(pattern)
    assert controls.indicator.pattern is pattern
    assert controls.observed_pattern() is pattern


async def test_recording_lights_red_steady(controls: SimControls) -> None:
    controls.indicator.show(LedPattern.RECORDING)
    red = controls.lamp("red", watch=0.05)
    assert red.lit
    assert not red.blinking
    assert not controls.lamp("green").lit


async def test_prompt_beeps_the_buzzer_pin(controls: SimControls) -> None:
    await controls.speaker.play(Prompt.INCIDENT_OPENED)
    levels = [level for _, level in controls.buzzer_states()]
    assert levels.count(True) == 3  # three beeps
    assert levels[-1] is False
    assert controls.history.of("prompt")[0].detail["prompt"] == "incident_opened"


def test_a_hold_on_scaled_time_costs_no_virtual_time_and_drops_no_frames() -> None:
    """gpiozero times a hold in real seconds; at 200x those 20 ms would be 4 s of device
    time with the loop blocked, and the camera would skip frames to catch up."""
    from hardware.base import CameraConfig
    from simulator.camera import SimCamera
    from simulator.clock import run

    async def main() -> tuple[float, SimCamera]:
        clock = SimClock(Timeline())
        controls = SimControls(asyncio.get_running_loop(), clock)
        camera = SimCamera(clock, "dev-1", CameraConfig(width=320, height=180), mode="replay")
        held: list[str] = []
        controls.buttons.on_hold(ButtonName.BOOKMARK, lambda: held.append("hold"))
        try:
            await camera.start(lambda p: None)
            await clock.sleep(2)
            before = asyncio.get_running_loop().time()
            for _ in range(3):
                controls.hold(ButtonName.BOOKMARK)
            spent = asyncio.get_running_loop().time() - before
            await clock.sleep(2)
            await camera.stop()
        finally:
            controls.close()
        assert held == ["hold"] * 3
        return spent, camera

    spent, camera = run(main(), speed=200)
    assert spent < 0.5
    assert not camera.history.of("dropped")
