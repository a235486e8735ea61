"""``unbroken bench agent`` on a tiny size: the machinery runs end to end and the JSON has its
shape. Not a timed test: nothing here asserts a speed or a size."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from cli.main import app

pytestmark = pytest.mark.slow


def positive(value: object) -> bool:
    return isinstance(value, int | float) and value > 0


def test_bench_agent_json_shape() -> None:
    args = ["bench", "agent", "--json", "--segments", "3", "--rounds", "2", "--seconds", "4"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["bench"] == "agent"
    assert report["unit"] == "segments/s"
    for key in ("figure", "baseline", "ratio"):
        assert positive(report[key]), key
    # figure and baseline are rounded to 3 decimals, the ratio to 4: compare within that.
    assert report["ratio"] == pytest.approx(
        report["figure"] / report["baseline"], rel=1e-2, abs=1e-3
    )
    assert isinstance(report["met"], bool)

    speed = report["throughput"]
    assert speed["figure"] == report["figure"]
    assert speed["target"] == 0.8
    assert speed["segments_per_round"] == 3
    assert len(speed["pipeline_rounds"]) == len(speed["baseline_rounds"]) == 2
    assert all(positive(r) for r in speed["pipeline_rounds"] + speed["baseline_rounds"])
    assert positive(speed["mux_ms_per_segment"])
    assert positive(speed["cpu_ratio"])
    assert speed["suite"] == report["agent_suite"]

    memory = report["memory"]
    assert memory["unit"] == "MB"
    assert memory["limit"] == 100.0
    for key in ("figure", "baseline", "ratio", "device_peak_mb", "hardware_peak_mb"):
        assert positive(memory[key]), key
    assert memory["figure"] >= memory["baseline"]
    assert memory["simulated_seconds"] == 4
    assert memory["segments"] >= 1
    assert memory["device_segments"] >= 1
    assert memory["device_failures"] == []


def test_bench_agent_text_and_aes_suite() -> None:
    args = ["bench", "agent", "--segments", "2", "--rounds", "1", "--seconds", "2"]
    result = CliRunner().invoke(app, [*args, "--suite", "aesgcm"])
    assert result.exit_code == 0, result.output
    assert "AES128GCM" in result.stdout
    assert "segments/s" in result.stdout
    assert "limit 100 MB" in result.stdout


def test_bench_agent_refuses_an_unknown_suite() -> None:
    result = CliRunner().invoke(app, ["bench", "agent", "--suite", "rot13"])
    assert result.exit_code != 0
