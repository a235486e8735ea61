"""Scenario files: parsing, validation, flattening, and driving the board."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from hardware.base import ButtonName
from simulator.board import simulated_board
from simulator.clock import SimClock, Timeline, run
from simulator.drive import apply_to_board
from simulator.scenario import (
    Api,
    ClockStep,
    Hold,
    Network,
    NetworkClear,
    PowerCut,
    PowerRestore,
    Press,
    ScenarioError,
    Server,
    StorageStep,
    builtin,
    parse,
    seconds,
    size,
)

REQUIRED = {
    "inspection",
    "obstruction",
    "battery_shift",
    "storage_full",
    "clock_drift",
    "network_outage",
    "lost_device",
}


def test_every_builtin_scenario_parses() -> None:
    scenarios = builtin()
    assert set(scenarios) >= REQUIRED
    for scenario in scenarios.values():
        assert scenario.steps, scenario.name
        assert all(0 <= s.at <= scenario.duration for s in scenario.actions())
        assert [s.at for s in scenario.steps] == sorted(s.at for s in scenario.steps)


def test_inspection_follows_a12() -> None:
    s = builtin()["inspection"]
    assert s.rule == "A12"
    labels = [step.args.get("label") for step in s.steps if isinstance(step, Api)]
    assert labels.index("door on arrival") < labels.index("door on leaving")
    opened = next(st for st in s.steps if isinstance(st, Api) and st.action == "incident_open")
    assert opened.args == {"case": "INSP-2026-0142"}
    assert not any(isinstance(st, PowerCut | Network) for st in s.steps)  # no interruption
    assert s.expect.gap_causes == ()


def test_obstruction_puts_a_legal_hold() -> None:
    s = builtin()["obstruction"]
    hold = next(st for st in s.steps if isinstance(st, Server))
    assert hold.action == "legal_hold"
    assert hold.args["reason"] == s.expect.legal_hold == "obstruction_of_officer"


def test_windows_end_before_the_next_one_starts() -> None:
    actions = builtin()["network_outage"].actions()
    at_4h30 = [type(a) for a in actions if a.at == 4.5 * 3600]
    assert at_4h30 == [NetworkClear, Network]


def test_units() -> None:
    assert seconds("1h30m") == 5400
    assert seconds("90s") == 90
    assert seconds(2.5) == 2.5
    assert size("64MiB") == 64 * 1024**2
    assert size(10) == 10
    for bad in ("soon", "", True):
        with pytest.raises(ScenarioError):
            seconds(bad)


BASE = 'name = "t"\nduration = "10m"\n'


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('[[step]]\nat = "1m"\ndo = "dance"\n', "unknown step type"),
        ('[[step]]\nat = "1m"\ndo = "press"\nbutton = "volume"\n', "unknown button"),
        ('[[step]]\nat = "11m"\ndo = "note"\n', "outside the run"),
        ('[[step]]\nat = "1m"\ndo = "network"\nuntil = "30s"\n', "outside the run"),
        ('[[step]]\nat = "1m"\ndo = "clock"\ncolour = "red"\n', "takes no 'colour'"),
        ('[[step]]\ndo = "note"\n', "missing 'at'"),
        ("[expect]\nhappiness = 1\n", "unknown expectations"),
        ("surprise = 1\n", "unknown keys"),
    ],
)
def test_malformed_files_are_refused_clearly(body: str, message: str) -> None:
    with pytest.raises(ScenarioError, match=message):
        parse(BASE + body, "t.toml")


def test_api_and_server_steps_keep_free_arguments() -> None:
    s = parse(BASE + '[[step]]\nat = 5\ndo = "api"\naction = "bookmark"\nlabel = "door"\n')
    assert s.steps == (Api(5.0, action="bookmark", args={"label": "door"}),)


def test_steps_drive_the_simulated_board(tmp_path: Path) -> None:
    text = BASE + "\n".join(
        [
            '[[step]]\nat = 0\ndo = "hold"\nbutton = "record"',
            '[[step]]\nat = 1\ndo = "press"\nbutton = "incident"',
            '[[step]]\nat = 2\ndo = "clock"\nntp = false\ndrift_ppm = 50\njump = -60',
            '[[step]]\nat = 3\ndo = "storage"\nfill = "1MiB"\nread_only = true',
            '[[step]]\nat = 4\ndo = "network"\nuntil = 6\ndown = true',
            '[[step]]\nat = 5\ndo = "power_cut"\nuntil = 7',
            '[[step]]\nat = 8\ndo = "battery"\npercent = 20\ncharging = true',
            '[[step]]\nat = 9\ndo = "camera"\nfail = "lens cracked"',
            '[[step]]\nat = 9\ndo = "api"\naction = "photo"',
        ]
    )
    scenario = parse(text)
    actions = scenario.actions()
    assert [type(a) for a in actions][:2] == [Hold, Press]
    assert isinstance(actions[2], ClockStep)
    assert isinstance(actions[3], StorageStep)
    assert {type(a) for a in actions} >= {NetworkClear, PowerRestore}

    async def main() -> list[bool]:
        board = simulated_board("dev-1", tmp_path, SimClock(Timeline()))
        held: list[str] = []
        board.buttons.on_hold(ButtonName.RECORD, lambda: held.append("record"))
        try:
            done = []
            for action in actions:
                done.append(apply_to_board(action, board))
                await asyncio.sleep(0)  # let button callbacks hop onto the loop
                if isinstance(action, ClockStep):
                    assert board.sim_clock.offset() < -59_000_000
                if isinstance(action, StorageStep):
                    assert board.medium.state().read_only
                    assert board.medium.state().free == 1024**2
                if isinstance(action, Network):
                    assert not board.network.state().up
                if isinstance(action, NetworkClear):
                    assert board.network.state().up
                if isinstance(action, PowerCut):
                    assert not board.power.on
            assert board.power.on
            assert board.sim_battery.charging
            assert board.sim_camera.history.of("failure")
            assert held == ["record"]
            return done
        finally:
            board.close()

    done = run(main())
    assert done[-1] is False  # the api step is the runner's
    assert all(done[:-1])
