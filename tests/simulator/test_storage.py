"""The simulated medium: capacity, EIO, read-only, forgetful card, power-cut semantics."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from hardware.base import StorageError
from simulator.history import History
from simulator.storage import CutPoint, PowerLost, SimulatedMedium


def medium(tmp_path: Path, **kwargs: object) -> SimulatedMedium:
    m = SimulatedMedium(tmp_path / "card", History(lambda: 0.0), **kwargs)  # type: ignore[arg-type]
    m.makedirs("tmp")
    m.makedirs("media")
    return m


def seal(m: SimulatedMedium, name: str, data: bytes) -> None:
    """The agent's durable sequence: write+fsync, rename, fsync both directories."""
    m.write_new(f"tmp/{name}", data)
    m.rename(f"tmp/{name}", f"media/{name}")
    m.sync_dir("media")
    m.sync_dir("tmp")


def files(m: SimulatedMedium) -> dict[str, bytes]:
    return {
        str(p.relative_to(m.root)): p.read_bytes() for p in sorted(m.root.rglob("*")) if p.is_file()
    }


def test_capacity_enospc_after_writing_what_fits(tmp_path: Path) -> None:
    m = medium(tmp_path, capacity=1000)
    seal(m, "a", b"a" * 600)
    assert m.state().free == 400
    with pytest.raises(StorageError) as info:
        m.write_new("tmp/b", b"b" * 600)
    assert info.value.errno == errno.ENOSPC
    assert m.size("tmp/b") == 400
    assert m.state().free == 0


def test_fill_and_give_room_back(tmp_path: Path) -> None:
    m = medium(tmp_path, capacity=10_000)
    seal(m, "a", b"a" * 100)
    m.fill(leave_free=50)
    assert m.state().free == 50
    m.inject_capacity(10_000)
    assert m.state().free == 9_900


def test_fsync_eio_fails_the_write_and_marks_unhealthy(tmp_path: Path) -> None:
    m = medium(tmp_path)
    m.inject_fsync_failure()
    with pytest.raises(StorageError) as info:
        m.write_new("tmp/a", b"data")
    assert info.value.errno == errno.EIO
    assert not m.state().healthy
    seal(m, "b", b"next")  # only the next fsync failed
    m.inject_fsync_failure()
    with pytest.raises(StorageError):
        m.sync_dir("media")


def test_eio_data_is_never_trusted_durable_again(tmp_path: Path) -> None:
    m = medium(tmp_path, cut_policy="drop")
    m.append("journal", b"ok-")
    m.inject_fsync_failure()
    with pytest.raises(StorageError):
        m.append("journal", b"lost-")
    m.append("journal", b"later")  # fsync succeeds, but the EIO pages were dropped
    m.sync_dir("")
    m.power_cut()
    assert files(m)["journal"] == b"ok-"


def test_read_only_refuses_writes_but_reads(tmp_path: Path) -> None:
    m = medium(tmp_path)
    seal(m, "a", b"abc")
    m.inject_read_only()
    for call in (lambda: m.write_new("tmp/x", b"1"), lambda: m.append("j", b"1")):
        with pytest.raises(StorageError) as info:
            call()
        assert info.value.errno == errno.EROFS
    assert m.read("media/a") == b"abc"
    assert m.state().read_only


@pytest.mark.parametrize(("mode", "expected"), [("zeros", b"\0\0\0\0"), ("empty", b"")])
def test_forgetful_card_accepts_writes_and_keeps_nothing(
    tmp_path: Path, mode: str, expected: bytes
) -> None:
    m = medium(tmp_path)
    m.inject_forgetful(mode)  # type: ignore[arg-type]
    seal(m, "a", b"data")  # no error: the card lies
    assert m.read("media/a") == expected


def test_cut_drop_loses_unsynced_rename_and_creation(tmp_path: Path) -> None:
    m = medium(tmp_path, cut_policy="drop")
    seal(m, "a", b"durable")
    m.write_new("tmp/b", b"renamed, dir not synced")
    m.rename("tmp/b", "media/b")
    m.write_new("tmp/c", b"created, dir not synced")
    m.power_cut()
    assert files(m) == {"media/a": b"durable"}
    kinds = [h.kind for h in m.history]
    assert kinds.count("cut_rename") == 1
    assert kinds.count("cut_create") == 2


def test_cut_keep_keeps_everything(tmp_path: Path) -> None:
    m = medium(tmp_path, cut_policy="keep")
    m.write_new("tmp/b", b"bbb")
    m.rename("tmp/b", "media/b")
    m.power_cut()
    assert files(m) == {"media/b": b"bbb"}


def test_operations_after_a_cut_raise_power_lost_until_power_on(tmp_path: Path) -> None:
    m = medium(tmp_path)
    m.power_cut()
    for call in (lambda: m.read("x"), m.state, lambda: m.write_new("y", b"")):
        with pytest.raises(PowerLost):
            call()
    m.power_on()
    assert m.listdir("media") == []


@pytest.mark.parametrize("policy", ["drop", "garble", "keep"])
def test_cut_inside_an_append_leaves_the_policy_tail(tmp_path: Path, policy: str) -> None:
    m = medium(tmp_path, cut_policy=policy, seed=3)  # type: ignore[arg-type]
    m.append("journal", b"A" * 100)
    m.sync_dir("")
    cuts: list[str] = []
    m.on_cut = lambda: cuts.append("device cut")
    m.inject_cut(CutPoint.WRITE)
    with pytest.raises(PowerLost):
        m.append("journal", b"B" * 100)
    assert cuts == ["device cut"]
    data = files(m)["journal"]
    assert data[:100] == b"A" * 100
    if policy == "drop":
        assert data == b"A" * 100
    elif policy == "keep":
        assert data == b"A" * 100 + b"B" * 100
    else:
        assert data != b"A" * 100 + b"B" * 100  # not what was written


def test_garble_is_reproducible_from_the_seed(tmp_path: Path) -> None:
    def run(seed: int, where: Path) -> dict[str, bytes]:
        m = medium(where, cut_policy="mixed", seed=seed)
        for i in range(20):
            m.append(f"j{i}", b"x" * 64)
        m.sync_dir("")
        m.inject_cut(CutPoint.WRITE, nth=1)
        with pytest.raises(PowerLost):
            m.append("j7", b"y" * 64)
        for i in range(5):
            m.power_on()
            m.write_new(f"tmp/n{i}", b"z" * 32)
            m.power_cut()
        return files(m)

    assert run(11, tmp_path / "1") == run(11, tmp_path / "2")
    outcomes = {repr(sorted(run(seed, tmp_path / f"s{seed}"))) for seed in range(6)}
    assert len(outcomes) > 1  # different seeds, different fates


def test_cut_between_unlink_and_dir_sync_can_bring_the_file_back(tmp_path: Path) -> None:
    m = medium(tmp_path, cut_policy="drop")
    seal(m, "a", b"receipted")
    m.inject_cut(CutPoint.RELEASE)
    with pytest.raises(PowerLost):
        m.release("media/a")
    assert files(m) == {"media/a": b"receipted"}


def test_cut_after_rename_before_dir_sync_undoes_the_rename(tmp_path: Path) -> None:
    m = medium(tmp_path, cut_policy="drop")
    m.write_new("tmp/a", b"segment")
    m.sync_dir("tmp")
    m.inject_cut(CutPoint.RENAME)
    with pytest.raises(PowerLost):
        m.rename("tmp/a", "media/a")
    assert files(m) == {"tmp/a": b"segment"}


def test_random_cut_lands_within_the_window(tmp_path: Path) -> None:
    m = medium(tmp_path)
    m.inject_random_cut(seed=5, within=10)
    sealed = 0
    try:
        for i in range(10):  # 4 cut points per seal: the cut lands in the first three
            seal(m, f"s{i}", b"x")
            sealed += 1
    except PowerLost:
        pass
    assert m.history.of("cut_inside")
    assert sealed < 3


def test_power_cut_mode_overrides_the_policy_for_that_cut_only(tmp_path: Path) -> None:
    m = medium(tmp_path, cut_policy="keep")
    m.write_new("tmp/b", b"bbb")
    m.rename("tmp/b", "media/b")
    m.power_cut(mode="drop")
    assert files(m) == {}
    assert m.cut_policy == "keep"
    m.power_on()
    m.write_new("tmp/c", b"ccc")
    m.power_cut()
    assert files(m) == {"tmp/c": b"ccc"}


def test_power_cut_seed_replays_the_same_fates(tmp_path: Path) -> None:
    def fates(where: Path, seed: int) -> list[str]:
        m = medium(where, cut_policy="mixed", seed=99)
        for i in range(12):
            m.write_new(f"tmp/f{i}", b"f" * 40)
        m.power_cut(mode="mixed", seed=seed)
        return [h.detail["fate"] for h in m.history if h.kind == "cut_create"]

    assert fates(tmp_path / "a", 4) == fates(tmp_path / "b", 4)
    assert fates(tmp_path / "c", 4) != fates(tmp_path / "d", 5)


def test_inject_fsync_error_is_eio_on_the_next_fsync(tmp_path: Path) -> None:
    m = medium(tmp_path)
    m.inject_fsync_error()
    with pytest.raises(StorageError) as caught:
        m.append("journal", b"x")
    assert caught.value.errno == errno.EIO
    m.append("journal", b"y")  # only the next one
