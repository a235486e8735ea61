"""The server's commands fail with one line and exit 2, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app

UNREACHABLE = "postgres://postgres@127.0.0.1:1/nowhere"


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["server", "--port", "18555"], {"UNBROKEN_DATABASE_URL": UNREACHABLE}, "reach"),
        (["enrol-token"], {"UNBROKEN_DATABASE_URL": UNREACHABLE}, "reach"),
        (["server", "--config", "/nonexistent.toml"], {}, "cannot read settings"),
        (
            ["server", "--mqtt", "mqtts://127.0.0.1:8883"],
            {"UNBROKEN_MQTT_CERT_FILE": "/nonexistent.pem"},
            "MQTT TLS files",
        ),
    ],
)
def test_one_line_errors(
    tmp_path: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    result = CliRunner().invoke(app, [*args, "--data", str(tmp_path)], env=env)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
