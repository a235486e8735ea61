"""``unbroken bench verify``, ``server`` and ``fleet`` on tiny sizes: each runs end to end and
its JSON has its shape. Not timed tests: nothing here asserts a speed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from bench.bundle import make_bundle
from bench.verify import baseline_verify
from cli.main import app
from protocol.verify import verify_path

pytestmark = pytest.mark.slow


def positive(value: object) -> bool:
    return isinstance(value, int | float) and value > 0


def run_json(*args: str) -> dict[str, Any]:
    result = CliRunner().invoke(app, ["bench", *args, "--json"])
    assert result.exit_code == 0, result.output
    report: dict[str, Any] = json.loads(result.stdout)
    for key in ("figure", "baseline", "ratio"):
        assert positive(report[key]), key
    # figure and baseline are rounded to 3 decimals, the ratio to 4: compare within that.
    assert report["ratio"] == pytest.approx(
        report["figure"] / report["baseline"], rel=1e-2, abs=1e-3
    )
    assert isinstance(report["unit"], str)
    assert isinstance(report["parameters"], dict)
    return report


def test_bench_verify_json_shape() -> None:
    report = run_json(
        "verify", "--segments", "20", "--rounds", "2", "--media-kb", "4", "--memory-segments", "5"
    )
    assert report["bench"] == "verify"
    assert report["unit"] == "segments/s"
    assert positive(report["mb_per_s"])
    assert positive(report["baseline_mb_per_s"])
    speed = report["throughput"]
    assert speed["segments"] == 20
    assert len(speed["verifier_rounds"]) == len(speed["baseline_rounds"]) == 2
    memory = report["memory"]
    assert memory["unit"] == "MB"
    assert memory["small_segments"] == 5
    assert memory["large_segments"] == 50
    for key in ("figure", "baseline", "ratio", "imported_mb"):
        assert positive(memory[key]), key
    assert report["parameters"]["memory_large_segments"] == 50


def test_made_bundle_is_authentic_and_baseline_agrees(tmp_path: Path) -> None:
    pin = make_bundle(tmp_path / "b", 12, media_bytes=1000, checkpoint_every=5)
    report = verify_path(tmp_path / "b", pin)
    assert report.verdict == "authentic"
    assert report.segments == 12
    records, segments, media = baseline_verify(tmp_path / "b", pin)
    assert (records, segments, media) == (report.records, report.segments, report.media_bytes)


def test_bench_server_json_shape() -> None:
    report = run_json(
        "server", "--devices", "2", "--segments", "6", "--batch", "4", "--media-kb", "2"
    )
    assert report["bench"] == "server"
    assert report["unit"] == "records/s"
    assert report["parameters"]["database"] == "sqlite"
    assert report["records"]["records"] == 2 * 8
    media = report["media"]
    assert media["unit"] == "uploads/s"
    assert media["uploads"] == 12
    for key in ("figure", "baseline", "ratio"):
        assert positive(media[key]), key


def test_bench_fleet_json_shape() -> None:
    report = run_json("fleet", "--devices", "2", "--seconds", "4", "--rounds", "1")
    assert report["bench"] == "fleet"
    assert report["unit"] == "device-seconds/s"
    fleet = report["fleet"]
    assert fleet["settled_devices"] == 2
    assert fleet["segments_synced"] >= 2
    assert report["parameters"]["devices"] == 2


@pytest.mark.parametrize(
    "args",
    [
        ["verify", "--segments", "0"],
        ["server", "--database-url", "mysql://nope"],
        ["server", "--batch", "1000"],
        ["fleet", "--devices", "0"],
    ],
)
def test_bench_refuses_bad_options(args: list[str]) -> None:
    result = CliRunner().invoke(app, ["bench", *args])
    assert result.exit_code == 2
