"""Agent settings: one frozen model, loaded by the command line from TOML or flags."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class AgentConfig(BaseModel):
    """How one device runs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    device_id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    store: Path
    server_url: str | None = None
    mqtt_url: str | None = None
    #: "auto" offers MQTT 5 and falls back to 3.1.1 when the broker refuses it; "3.1.1" and
    #: "5" pin the version (ARCHITECTURE §6: nothing essential depends on MQTT 5).
    mqtt_protocol: Literal["auto", "3.1.1", "5"] = "auto"
    #: For ``mqtts://``: the CA that signed the broker's certificate (default: the system's),
    #: and this device's client certificate and key (the broker's ACLs key on its CN).
    mqtt_ca_file: Path | None = None
    mqtt_cert_file: Path | None = None
    mqtt_key_file: Path | None = None
    enrolment_token: str | None = None
    officer: str | None = None
    #: Go on duty (notice, then continuous recording) as soon as the device boots.
    duty_at_boot: bool = True

    segment_seconds: float = Field(default=1.0, ge=0.5, le=10.0)
    max_segment_seconds: float = Field(default=2.0, ge=0.5, le=20.0)
    preroll_seconds: float = Field(default=2.0, ge=0.0, le=60.0)
    telemetry_seconds: float = Field(default=30.0, gt=0)
    sync_seconds: float = Field(default=5.0, gt=0)
    notice_seconds: float = Field(default=3.0, ge=0)

    shift_hours: float = Field(default=8.0, gt=0)
    battery_percent_per_hour: float = Field(default=9.0, gt=0)
    clock_offset_threshold_s: float = Field(default=2.0, gt=0)
    low_storage_seconds: float = Field(default=1800.0, ge=0)

    @property
    def shift_seconds(self) -> float:
        """Length of a shift."""
        return self.shift_hours * 3600
