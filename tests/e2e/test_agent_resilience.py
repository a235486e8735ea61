"""Nothing around the recorder stops the camera: a server answering nonsense, or a helper
task (announcements, sync, telemetry, local API) failing, leaves recording going."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from protocol.verify import verify_path
from simulator.clock import Timeline, run
from simulator.runner import DeviceSpec, SimulatedDevice


def test_a_captive_portal_answering_html_does_not_stop_recording(tmp_path: Path) -> None:
    def portal() -> httpx.AsyncBaseTransport:
        return httpx.MockTransport(lambda _: httpx.Response(200, text="<html>portal</html>"))

    async def main() -> tuple[int, int, bool, int, list[BaseException]]:
        spec = DeviceSpec("cam-001", tmp_path, seed=1, server_url="http://portal.example")
        spec.sync_seconds = 2.0
        device = SimulatedDevice(spec, Timeline(), transport=portal)
        agent = await device.boot()
        before = agent.recorder.segments_written
        await device.clock.sleep(10)
        after = agent.recorder.segments_written
        recording = agent.recorder.recording
        assert agent.syncer is not None
        failed_passes = agent.syncer.state.failures
        await device.stop()
        return before, after, recording, failed_passes, device.failures

    before, after, recording, failed_passes, failures = run(main())
    assert recording
    assert after >= before + 8, (before, after)
    assert failed_passes > 0  # each pass failed, and was retried
    assert failures == []
    assert verify_path(tmp_path).authentic


def test_a_failing_helper_task_is_restarted_and_recording_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agent.announce import Announcer

    real = Announcer.run
    calls = 0

    async def flaky(self: Announcer) -> None:
        # The announcer dies twice (a bug, a library error); the agent must not.
        nonlocal calls
        calls += 1
        if calls <= 2:
            raise RuntimeError("announcer bug")
        await real(self)

    monkeypatch.setattr(Announcer, "run", flaky)

    async def main() -> tuple[int, int, list[BaseException]]:
        spec = DeviceSpec("cam-002", tmp_path, seed=2, mqtt_url="mqtt://127.0.0.1:9")
        device = SimulatedDevice(spec, Timeline())
        agent = await device.boot()
        before = agent.recorder.segments_written
        await device.clock.sleep(10)
        recorded = agent.recorder.segments_written - before
        restarts = agent.helper_failures
        await device.stop()
        return recorded, restarts, device.failures

    recorded, restarts, failures = run(main())
    assert recorded >= 8
    assert restarts == 2
    assert calls == 3
    assert failures == []
    assert verify_path(tmp_path).authentic
