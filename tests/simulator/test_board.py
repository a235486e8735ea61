"""The assembled simulated board, and the real agent running on it in virtual time."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from hardware.base import Board, ButtonName, CameraConfig, LedPattern, MediaPacket
from simulator.board import SimHandles, SimulatedBoard, simulated_board
from simulator.clock import SimClock, Timeline, run
from simulator.storage import CutPoint, PowerLost

SMALL = CameraConfig(width=320, height=180)


def test_board_has_every_part_and_wires_power(tmp_path: Path) -> None:
    async def main() -> None:
        board = simulated_board(
            "dev-1", tmp_path / "store", SimClock(Timeline()), seed=1, camera=SMALL
        )
        try:
            assert isinstance(board, Board)
            killed: list[str] = []
            board.power.on_cut.append(lambda: killed.append("agent killed"))
            packets: list[MediaPacket] = []
            await board.camera.start(packets.append)
            await board.clock.sleep(2)
            assert board.sim_battery.recording  # the camera draws on the battery
            board.indicator.show(LedPattern.RECORDING)
            board.power.cut("test")
            assert killed == ["agent killed"]
            assert not board.sim_camera.running
            assert board.indicator.pattern is LedPattern.OFF
            assert not board.sim_battery.recording
            with pytest.raises(PowerLost):
                board.storage.write_new("x", b"1")
            board.power.restore()
            board.storage.write_new("x", b"1")
            assert board.clock.mono() == 5_000_000  # a new boot
            parts = {name for name, _ in board.history()}
            assert {"camera", "power", "storage", "battery"} <= parts
        finally:
            board.close()

    run(main())


def test_a_cut_inside_a_storage_operation_cuts_the_whole_device(tmp_path: Path) -> None:
    async def main() -> None:
        board = simulated_board("dev-1", tmp_path, SimClock(Timeline()), camera=SMALL)
        try:
            await board.camera.start(lambda p: None)
            board.medium.inject_cut(CutPoint.WRITE)
            with pytest.raises(PowerLost):
                board.storage.append("journal", b"x")
            assert not board.power.on
            assert not board.sim_camera.running
        finally:
            board.close()

    run(main())


def test_buttons_reach_callbacks_through_the_board(tmp_path: Path) -> None:
    async def main() -> list[str]:
        board = simulated_board("dev-1", tmp_path, SimClock(Timeline()), camera=SMALL)
        got: list[str] = []
        board.buttons.on_hold(ButtonName.RECORD, lambda: got.append("record held"))
        board.controls.hold("record")
        await asyncio.sleep(0.1)
        board.close()
        return got

    assert run(main()) == ["record held"]


def _run_agent(store: Path, keys: Path, cuts: tuple[float, ...], until: float) -> SimulatedBoard:
    from agent.capture.store import EvidenceStore
    from agent.config import AgentConfig
    from agent.enrolment import load_identity, provision_test_enrolment
    from agent.runtime import Agent

    async def main() -> SimulatedBoard:
        timeline = Timeline()
        board = simulated_board("dev-1", store, SimClock(timeline), seed=4, camera_mode="replay")
        provision_test_enrolment(EvidenceStore(board.storage), keys, "dev-1", board.clock.wall())
        config = AgentConfig(device_id="dev-1", store=store)
        hooks = list(board.power.on_cut)
        for end in (*cuts, until):
            evidence = EvidenceStore(board.storage)
            agent = Agent(config, board, evidence, load_identity(evidence, keys, "dev-1"))
            board.power.on_cut[:] = [*hooks, agent.kill]
            task = asyncio.create_task(agent.run(), name="agent")
            await timeline.sleep(end - timeline.now())
            if end == until:
                agent.stop()
                await task
            else:
                board.power.cut("scenario")
                await task
                await timeline.sleep(5)  # dark, then a boot
                board.power.restore()
        board.close()
        return board

    return run(main())


def test_the_agent_records_through_two_power_cuts_and_verifies(tmp_path: Path) -> None:
    store, keys = tmp_path / "store", tmp_path / "keys"
    keys.mkdir()
    board = _run_agent(store, keys, cuts=(10.0, 20.0), until=30.0)
    assert board.power.cuts == 2
    assert board.sim_camera.frames > 450  # 20 s powered of 30
    result = subprocess.run(
        [str(Path(sys.executable).parent / "unbroken"), "verify", str(store), "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    report = json.loads(result.stdout)
    assert result.returncode == 0, result.stdout[-2000:]
    assert report["verdict"] == "authentic"
    assert [g["cause"] for g in report["gaps"]] == ["power_loss", "power_loss"]
    assert 15 <= report["covered_seconds"] <= 30


def test_board_unpacks_into_board_and_handles_and_takes_the_short_options(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        clock = SimClock(Timeline())
        board, handles = simulated_board(
            "dev-2", tmp_path, clock, seed=3, camera=SMALL, replay=True, capacity=10_000
        )
        try:
            assert isinstance(board, Board)
            assert isinstance(handles, SimHandles)
            assert handles.clock is clock is board.clock
            assert handles.medium is board.storage
            assert handles.camera is board.camera
            assert handles.camera.mode == "replay"
            assert handles.camera.config == SMALL
            assert board.storage.state().total == 10_000
            handles.medium.inject_read_only()
            assert board.storage.state().read_only
        finally:
            handles.controls.close()

    run(main())
