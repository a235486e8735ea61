"""Server settings: defaults for one machine, overridden by a TOML file, then by the
environment (``UNBROKEN_*``), then by explicit arguments (what the command line passes).

The embedded default keeps everything under one data directory: the SQLite database
(``synchronous=FULL``, WAL), the server keys, the blob store and partial uploads. In
production the database is PostgreSQL (``UNBROKEN_DATABASE_URL=postgres://...``) and the
blobs go to an S3-compatible store with object lock.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from server.errors import ConfigError

MIB = 1 << 20


class Settings(BaseSettings):
    """Everything the server needs to know before it starts."""

    model_config = SettingsConfigDict(env_prefix="UNBROKEN_", extra="forbid", frozen=True)

    data: Path = Path("unbroken-data")
    database_url: str | None = None
    fleet_name: str = Field(default="unbroken fleet", min_length=1, max_length=200)
    log_name: str = Field(default="unbroken-log", min_length=1, max_length=200)
    server_name: str = Field(default="unbroken-server", min_length=1, max_length=200)
    #: Bearer token of the administrator API; generated into ``{data}/keys/admin.token``
    #: on first start when not given.
    admin_token: SecretStr | None = None

    #: Sign a checkpoint at least this often when the log has grown (seconds).
    checkpoint_interval: float = Field(default=30.0, gt=0)
    #: Record batches arriving within this window share one log commit and checkpoint.
    log_batch_window: float = Field(default=0.05, ge=0, le=5)

    blob_backend: Literal["local", "s3"] = "local"
    s3_endpoint_url: str | None = None
    s3_bucket: str = "unbroken-evidence"
    s3_region: str = "us-east-1"
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None
    s3_prefix: str = "blobs/"
    #: Days of COMPLIANCE retention set on each object when the bucket has object lock.
    s3_retention_days: int = Field(default=0, ge=0)

    mqtt_url: str | None = None
    mqtt_group: str = Field(default="unbroken-server", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    #: "auto" offers MQTT 5 and falls back to 3.1.1 when the broker refuses it (amqtt);
    #: "3.1.1" and "5" pin the version. Nothing essential depends on MQTT 5.
    mqtt_protocol: Literal["auto", "3.1.1", "5"] = "auto"
    #: For ``mqtts://``: the CA of the broker's certificate (default: the system's), and this
    #: replica's client certificate and key (CN ``unbroken-server-N`` in the shipped ACL).
    mqtt_ca_file: Path | None = None
    mqtt_cert_file: Path | None = None
    mqtt_key_file: Path | None = None
    #: Subscribe through ``$share/<group>/...`` so that replicas split the load (Mosquitto,
    #: EMQX). False for a single server or a broker without shared subscriptions (amqtt).
    mqtt_shared: bool = True

    max_body_bytes: int = Field(default=32 * MIB, gt=0)
    max_media_bytes: int = Field(default=512 * MIB, gt=0)
    enrolment_token_ttl: float = Field(default=7 * 86400.0, gt=0)

    battery_low_percent: float = Field(default=20.0, ge=0, le=100)
    storage_low_bytes: int = Field(default=1 << 30, ge=0)
    clock_offset_max_seconds: float = Field(default=2.0, gt=0)
    silent_after_seconds: float = Field(default=300.0, gt=0)
    #: Media recorded on a day must be on the server this many hours after that day began.
    upload_deadline_hours: float = Field(default=24.0, gt=0)
    timezone: str = "UTC"

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @property
    def db_url(self) -> str:
        """The database URL: the setting, or the SQLite file in the data directory."""
        if self.database_url:
            return self.database_url
        return f"sqlite://{self.data.resolve()}/unbroken.db"

    @property
    def key_dir(self) -> Path:
        """Where the fleet root, server and encryption keys live (files of mode 0600)."""
        return self.data / "keys"

    @property
    def blob_dir(self) -> Path:
        """The local blob store."""
        return self.data / "blobs"

    @property
    def upload_dir(self) -> Path:
        """Partial media uploads, kept until whole."""
        return self.data / "uploads"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Arguments beat the environment; a TOML file (see :func:`load_settings`) comes last."""
        return (init_settings, env_settings)


def load_settings(config: Path | None = None, **overrides: Any) -> Settings:
    """Settings from ``config`` (TOML, optional), the environment, then ``overrides``.

    Overrides whose value is None are ignored, so that a command line can pass its options
    through unchanged. Raises :class:`ConfigError` for an unreadable file or bad values.
    """
    file_values: dict[str, Any] = {}
    if config is not None:
        try:
            with config.open("rb") as f:
                file_values = tomllib.load(f)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{config}: cannot read settings ({exc})") from exc
        section = file_values.get("server")
        if isinstance(section, dict):
            file_values = section
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        from_env = Settings(**given)
    except ValueError as exc:
        raise ConfigError(f"invalid settings: {exc}") from exc
    explicit = from_env.model_fields_set
    merged = {**file_values, **from_env.model_dump(include=explicit)}
    try:
        return Settings.model_validate(merged) if file_values else from_env
    except ValueError as exc:
        raise ConfigError(f"invalid settings: {exc}") from exc
