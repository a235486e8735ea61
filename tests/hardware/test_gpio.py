"""hardware.gpio on gpiozero's MockFactory: thread hops and the gpiozero wiring itself."""

from __future__ import annotations

import asyncio
import threading

from gpiozero.pins.mock import MockFactory

from hardware.base import ButtonName, LedPattern
from hardware.gpio import ButtonPins, GpioButtons, GpioIndicator, LedPins


async def test_a_press_from_another_thread_runs_the_callback_on_the_loop() -> None:
    factory = MockFactory()
    buttons = GpioButtons(asyncio.get_running_loop(), factory, hold_time=0.05)
    seen: list[int] = []
    done = asyncio.Event()

    def on_press() -> None:
        seen.append(threading.get_ident())
        done.set()

    buttons.on_press(ButtonName.BOOKMARK, on_press)
    pin = factory.pin(ButtonPins().bookmark)

    def finger() -> None:  # a thread other than the loop's, as gpiozero's are
        pin.drive_low()
        pin.drive_high()

    worker = threading.Thread(target=finger, name="finger")
    worker.start()
    worker.join()
    await asyncio.wait_for(done.wait(), 2)
    assert seen == [threading.get_ident()]
    buttons.close()
    factory.reset()


async def test_buttons_use_the_pull_up_and_active_low_wiring() -> None:
    factory = MockFactory()
    buttons = GpioButtons(asyncio.get_running_loop(), factory)
    pin = factory.pin(ButtonPins().record)
    assert pin.pull == "up"
    assert not buttons.devices[ButtonName.RECORD].is_pressed
    pin.drive_low()
    assert buttons.devices[ButtonName.RECORD].is_pressed
    buttons.close()
    factory.reset()


def test_indicator_drives_the_led_pins() -> None:
    factory = MockFactory()
    indicator = GpioIndicator(factory)
    pins = LedPins()
    indicator.show(LedPattern.INCIDENT)
    assert (factory.pin(pins.red).state, factory.pin(pins.amber).state) == (True, True)
    assert not factory.pin(pins.green).state
    indicator.show(LedPattern.OFF)
    assert not any(factory.pin(p).state for p in (pins.red, pins.green, pins.amber))
    indicator.close()
    factory.reset()
