"""Settings from defaults, a TOML file, the environment and arguments; server keys on disk."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from protocol.certs import KeyKind
from protocol.keys import SoftwareSigner
from server.db import connection_config
from server.errors import ConfigError
from server.keys import load_or_create
from server.settings import Settings, load_settings


def test_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "server.toml"
    config.write_text('[server]\nlog_name = "from-file"\nfleet_name = "File fleet"\n')
    assert load_settings(config).log_name == "from-file"
    monkeypatch.setenv("UNBROKEN_LOG_NAME", "from-env")
    settings = load_settings(config)
    assert (settings.log_name, settings.fleet_name) == ("from-env", "File fleet")
    settings = load_settings(config, log_name="from-arg", data=None)
    assert settings.log_name == "from-arg"
    assert settings.data == Path("unbroken-data")


def test_defaults_and_errors(tmp_path: Path) -> None:
    settings = Settings(data=tmp_path)
    assert settings.db_url == f"sqlite://{tmp_path.resolve()}/unbroken.db"
    credentials = connection_config(settings.db_url)["credentials"]
    assert credentials["synchronous"] == "FULL"
    assert credentials["journal_mode"] == "WAL"
    with pytest.raises(ConfigError):
        connection_config("mysql://x/y")
    with pytest.raises(ConfigError):
        connection_config("sqlite://:memory:")
    with pytest.raises(ConfigError):
        load_settings(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("checkpoint_interval = -1\n")
    with pytest.raises(ConfigError):
        load_settings(bad)
    with pytest.raises(ConfigError):
        load_settings(timezone="Mars/Olympus")


def test_keys_made_once_with_private_modes(tmp_path: Path) -> None:
    keys = load_or_create(tmp_path / "keys", "Test fleet", "srv", 1_790_000_000_000_000)
    for path in (tmp_path / "keys").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE((tmp_path / "keys").stat().st_mode) == 0o700
    again = load_or_create(tmp_path / "keys", "Other name", "srv", 1_800_000_000_000_000)
    assert again.fingerprint == keys.fingerprint
    assert again.server.public_key == keys.server.public_key
    assert again.encryption.public_key == keys.encryption.public_key
    trust = again.trust()
    assert trust.server_key(keys.server.kid).kind is KeyKind.SERVER
    assert keys.root_key.name == "Test fleet"


def test_root_kept_offline(tmp_path: Path) -> None:
    """Without root.key the server runs; only what needs the root says so."""
    key_dir = tmp_path / "keys"
    load_or_create(key_dir, "Fleet", "srv", 1)
    (key_dir / "root.key").unlink()
    keys = load_or_create(key_dir, "Fleet", "srv", 2)
    assert keys.root is None
    with pytest.raises(ConfigError, match="offline"):
        keys.require_root()
    (key_dir / "server.cert").unlink()
    with pytest.raises(ConfigError, match="root key is offline"):
        load_or_create(key_dir, "Fleet", "srv", 3)


def test_key_files_refused_when_readable_by_others(tmp_path: Path) -> None:
    key_dir = tmp_path / "keys"
    load_or_create(key_dir, "Fleet", "srv", 1)
    (key_dir / "server.key").chmod(0o644)
    with pytest.raises(ConfigError, match="0600"):
        load_or_create(key_dir, "Fleet", "srv", 2)


def test_a_foreign_root_key_is_refused(tmp_path: Path) -> None:
    key_dir = tmp_path / "keys"
    load_or_create(key_dir, "Fleet", "srv", 1)
    (key_dir / "root.key").unlink()
    (key_dir / "root.key").write_bytes(SoftwareSigner.generate().private_pem())
    (key_dir / "root.key").chmod(0o600)
    with pytest.raises(ConfigError, match="does not match"):
        load_or_create(key_dir, "Fleet", "srv", 2)
