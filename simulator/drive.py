"""Performing scenario steps on a simulated board.

:func:`apply_to_board` does what a step does to the hardware. Steps that need the agent
(``api``, ``check``), the server (``server``), or a harness decision (``lose``, ``note``)
return False: the runner performs them. ``hold`` blocks the calling thread for the real
gpiozero hold time (see :mod:`simulator.controls`).
"""

from __future__ import annotations

from simulator.board import SimulatedBoard
from simulator.scenario import (
    Battery,
    CameraStep,
    ClockStep,
    Hold,
    Network,
    NetworkClear,
    PowerCut,
    PowerRestore,
    Press,
    Step,
    StorageStep,
)


def apply_to_board(step: Step, board: SimulatedBoard) -> bool:
    """Perform ``step`` on ``board``; False if it is not a hardware step."""
    match step:
        case Press(button=button):
            board.controls.press(button)
        case Hold(button=button):
            board.controls.hold(button)
        case PowerCut():
            board.power.cut(step.note or "scenario power cut")
        case PowerRestore():
            board.power.restore()
        case Battery(percent=percent, charging=charging):
            if percent is not None:
                board.sim_battery.inject_percent(percent)
            if charging is not None:
                board.sim_battery.inject_charging(charging)
        case Network():
            _network(step, board)
        case NetworkClear():
            board.link.clear()
        case ClockStep(ntp=ntp, drift_ppm=drift, jump=jump):
            if drift is not None:
                board.sim_clock.inject_drift(drift)
            if ntp is not None:
                board.sim_clock.inject_ntp(ntp)
            if jump is not None:
                board.sim_clock.inject_jump(jump)
        case StorageStep():
            _storage(step, board)
        case CameraStep(fail=fail, recover=recover, stall=stall):
            if fail is not None:
                board.sim_camera.inject_failure(fail)
            if recover:
                board.sim_camera.inject_recover()
            if stall is not None:
                board.sim_camera.inject_stall(stall)
        case _:
            return False
    return True


def _network(step: Network, board: SimulatedBoard) -> None:
    link = board.link
    if step.down:
        link.inject_down()
    if step.latency:
        link.inject_latency(step.latency)
    if step.bandwidth is not None:
        link.inject_bandwidth(step.bandwidth)
    if step.resets:
        link.inject_resets(step.resets)
    if step.black_hole:
        link.inject_black_hole(True)


def _storage(step: StorageStep, board: SimulatedBoard) -> None:
    medium = board.medium
    if step.fill is not None:
        medium.fill(step.fill)
    if step.capacity is not None:
        medium.inject_capacity(step.capacity)
    if step.read_only is not None:
        medium.inject_read_only(step.read_only)
    if step.fsync_failures:
        medium.inject_fsync_failure(step.fsync_failures)
    if step.forgetful == "off":
        medium.inject_forgetful(None)
    elif step.forgetful in ("zeros", "empty"):
        medium.inject_forgetful("zeros" if step.forgetful == "zeros" else "empty")
