"""kill -9 during ``unbroken agent --simulate`` (FAULTS 1): the store stays verifiable, each
kill is one gap explained by a signed recovery record, and nothing else is lost."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from protocol.verify import verify_path

pytestmark = pytest.mark.slow
UNBROKEN = [sys.executable, "-m", "cli"]


def start(store: Path) -> subprocess.Popen[bytes]:
    log = (store.parent / "agent.log").open("ab")
    with log:
        return subprocess.Popen(
            [*UNBROKEN, "agent", "--simulate", "--store", str(store)], stdout=log, stderr=log
        )


def wait_recording(store: Path, proc: subprocess.Popen[bytes], segments: int) -> None:
    """Wait until ``segments`` more media files are on the medium."""
    media = store / "media"
    have = len(os.listdir(media)) if media.exists() else 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, (store.parent / "agent.log").read_text()[-2000:]
        if media.exists() and len(os.listdir(media)) >= have + segments:
            return
        time.sleep(0.05)
    raise AssertionError("the agent did not record")


@pytest.mark.parametrize("seed", [1, 2])
def test_two_kills_leave_a_store_that_verifies(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    store = tmp_path / "store"
    for _ in range(2):
        proc = start(store)
        wait_recording(store, proc, rng.randint(2, 5))
        time.sleep(rng.uniform(0, 0.4))  # land anywhere in the write cycle
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    proc = start(store)
    wait_recording(store, proc, 3)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(30) == 0
    report = verify_path(store)
    errors = [f.to_json() for f in report.findings if f.severity.value == "error"]
    assert report.verdict == "authentic", errors
    assert [g.cause for g in report.gaps] == ["power_loss", "power_loss"]
    assert [s.ended for s in report.sessions] == ["power_loss", "power_loss", "closed"]
    assert report.segments == report.segments_ok
    codes = {f.code.value for f in report.findings}
    assert "GAP_UNEXPLAINED" not in codes
    assert "UNEXPLAINED_STOP" not in codes
