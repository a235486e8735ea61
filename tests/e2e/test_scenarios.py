"""Every shipped scenario, played against the real agent on simulated hardware in virtual
time, verifies offline and meets its own expectations (server steps are played by the
server e2e tests; here they are reported as skipped)."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulator.clock import run
from simulator.play import play
from simulator.runner import DeviceSpec
from simulator.scenario import builtin

SCENARIOS = sorted(builtin())


@pytest.mark.slow
@pytest.mark.parametrize("name", SCENARIOS)
def test_scenario(tmp_path: Path, name: str) -> None:
    scenario = builtin()[name]
    store = tmp_path / "store"
    # Shifts of several hours are played with 10 s segments to keep the suite quick; the
    # chain, gaps and coverage rules are the same at any segment length.
    segment = 10.0 if scenario.duration > 3600 else 1.0
    spec = DeviceSpec(f"sim-{name.replace('_', '-')}", store, seed=3, segment_seconds=segment)
    result = run(play(scenario, store, spec=spec))
    assert result.passed, result.problems
    assert result.report.segments > 0
    for skipped in result.skipped:
        assert "server" in skipped
