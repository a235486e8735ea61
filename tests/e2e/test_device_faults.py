"""The agent on simulated hardware, in virtual time, through the device faults of FAULTS 1-7.

Each test runs a real agent (real H.264, real keys, real store on disk) faster than real
time and then verifies the device store offline, as a court would."""

from __future__ import annotations

import io
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from protocol.journal import JournalScan
from protocol.verify import Report, verify_path
from simulator.clock import Timeline, run
from simulator.play import record_kinds
from simulator.runner import DeviceSpec, SimulatedDevice

Script = Callable[[SimulatedDevice], Awaitable[None]]


def simulate(tmp_path: Path, script: Script, **board: object) -> tuple[SimulatedDevice, Report]:
    async def main() -> SimulatedDevice:
        device = SimulatedDevice(
            DeviceSpec("cam-001", tmp_path / "store", seed=7, board=dict(board)), Timeline()
        )
        await device.boot()
        try:
            await script(device)
        finally:
            await device.stop()
        return device

    device = run(main())
    return device, verify_path(tmp_path / "store")


def codes(report: Report) -> set[str]:
    return {f.code.value for f in report.findings}


def errors(report: Report) -> list[dict[str, object]]:
    return [f.to_json() for f in report.findings if f.severity.value == "error"]


def test_continuous_recording_is_covered(tmp_path: Path) -> None:
    async def script(device: SimulatedDevice) -> None:
        await device.clock.sleep(20)

    device, report = simulate(tmp_path, script)
    assert report.verdict == "authentic", errors(report)
    assert report.segments >= 18
    assert not report.gaps
    assert not device.failures


@pytest.mark.parametrize("policy", ["drop", "garble", "keep"])
def test_power_cut_is_one_explained_gap(tmp_path: Path, policy: str) -> None:
    async def script(device: SimulatedDevice) -> None:
        await device.clock.sleep(6.3)
        await device.power_cut()
        await device.clock.sleep(2)
        await device.boot()
        await device.clock.sleep(6)

    device, report = simulate(tmp_path, script, cut_policy=policy)
    assert report.verdict == "authentic", errors(report)
    assert [g.cause for g in report.gaps] == ["power_loss"]
    assert [s.ended for s in report.sessions] == ["power_loss", "closed"]
    assert device.boots == 2


@pytest.mark.parametrize("point", ["write", "rename", "sync_dir"])
def test_cut_inside_a_storage_operation(tmp_path: Path, point: str) -> None:
    async def script(device: SimulatedDevice) -> None:
        await device.clock.sleep(4)
        assert device.board is not None
        device.board.medium.inject_cut(point)
        await device.clock.sleep(2)  # the next such operation cuts the power
        assert not device.board.power.on
        await device.boot()
        await device.clock.sleep(4)

    _, report = simulate(tmp_path, script)
    assert report.verdict == "authentic", errors(report)
    assert [g.cause for g in report.gaps] == ["power_loss"]


def test_storage_full_is_recorded_and_recording_resumes(tmp_path: Path) -> None:
    async def script(device: SimulatedDevice) -> None:
        assert device.board is not None
        medium = device.board.medium
        await device.clock.sleep(3)
        medium.inject_capacity(medium.used + 200_000)  # room for very little more
        await device.clock.sleep(5)
        assert device.agent is not None
        assert device.agent.recorder.storage_full
        medium.inject_capacity(None)  # room again (e.g. a card swap or receipted media freed)
        await device.clock.sleep(4)

    _, report = simulate(tmp_path, script)
    assert report.verdict == "authentic", errors(report)
    assert "storage_full" in [g.cause for g in report.gaps]


def test_fsync_failure_is_never_reported_sealed(tmp_path: Path) -> None:
    async def script(device: SimulatedDevice) -> None:
        assert device.board is not None
        await device.clock.sleep(3)
        device.board.medium.inject_fsync_failure(1)
        await device.clock.sleep(4)

    device, report = simulate(tmp_path, script)
    assert report.verdict == "authentic", errors(report)
    assert device.board is not None
    (failed,) = device.board.medium.history.of("fsync_eio")
    path = str(failed.detail["path"])
    assert path.startswith("tmp/")  # the failed file was never renamed into media/
    assert (tmp_path / "store" / path).exists()  # and is kept, not deleted
    seq = int(path.split("/")[1].split(".", maxsplit=1)[0])
    assert (tmp_path / "store" / "media" / f"{seq:012d}.ubm").exists()  # rewritten elsewhere


@pytest.mark.parametrize("kept", [True, False])
def test_fsync_failure_on_the_journal_spends_the_seq_and_recording_goes_on(
    tmp_path: Path, kept: bool
) -> None:
    """FAULTS 4 on a journal append: the record may or may not be on the card. Its seq is
    never given to another record (that would be a fork); the failure is the next record,
    in a new journal, and recording goes on."""

    async def script(device: SimulatedDevice) -> None:
        assert device.board is not None
        assert device.agent is not None
        await device.clock.sleep(3)
        device.board.medium.inject_fsync_failure(1, under="journal/")
        await device.clock.sleep(1.5)
        before = device.agent.recorder.segments_written
        await device.clock.sleep(3)
        assert device.agent.recorder.segments_written >= before + 2  # still recording
        if not kept:  # the failed append did not reach the card after all
            (failed,) = device.board.medium.history.of("fsync_eio")
            journal = tmp_path / "store" / str(failed.detail["path"])
            data = journal.read_bytes()
            last = list(JournalScan(io.BytesIO(data), "j").entries())[-1]
            journal.write_bytes(data[: last[0]])

    device, report = simulate(tmp_path, script)
    assert device.failures == []
    journals = sorted((tmp_path / "store" / "journal").iterdir())
    assert len(journals) == 2  # nothing appended to the journal after its failed fsync
    codes_found = codes(report)
    assert "FORK" not in codes_found
    kinds = record_kinds(tmp_path / "store")
    assert kinds.get("media_failing") == 1
    if kept:
        assert report.verdict == "authentic", errors(report)
    else:  # honestly a missing record (and its media without it), never a fork
        found = {e["code"] for e in errors(report)}
        assert "RECORD_MISSING" in found, errors(report)
        assert found <= {"RECORD_MISSING", "UNEXPECTED_FILE"}, errors(report)


def test_card_that_keeps_nothing_raises_media_failing(tmp_path: Path) -> None:
    async def script(device: SimulatedDevice) -> None:
        assert device.board is not None
        await device.clock.sleep(3)
        device.board.medium.inject_forgetful("zeros")
        await device.clock.sleep(2)
        assert device.agent is not None
        assert device.agent.recorder.media_failing
        device.board.medium.inject_forgetful(None)
        await device.clock.sleep(2)

    _, report = simulate(tmp_path, script)
    # the agent never signed a record for media that did not read back
    assert not {"MEDIA_CORRUPT", "MEDIA_ABSENT"} & codes(report), errors(report)
