"""Database tables (tortoise-orm). Times are integers, µs since the Unix epoch (UTC).

Only :mod:`server.db` and the modules that query these tables import tortoise; the wire
formats stay in :mod:`protocol`. Evidence rows (records, media, log nodes, checkpoints,
custody, quarantine) are appended and never rewritten, except for the flags that mark a
record quarantined or a device revoked. Schema changes go through server/migrations.

Docstrings of the models become SQL comments: no semicolons or backquotes in them (the
SQLite migration splits statements at semicolons). Primary keys with ``generated=False``
must keep it in the migration by hand: ``makemigrations`` of tortoise 1.1 drops it.
"""

from __future__ import annotations

from typing import Any

from tortoise import fields
from tortoise.models import Model

DEVICE_ID_LEN = 63


class Device(Model):
    """An enrolled device, its certified key, and the head of its chain as received."""

    id = fields.CharField(primary_key=True, max_length=DEVICE_ID_LEN)
    public_key = fields.BinaryField()
    cert = fields.BinaryField()
    enrolled = fields.BigIntField()
    #: SHA-256 (hex) of the API token handed out at enrolment (the token is not kept).
    token_hash = fields.CharField(max_length=64, unique=True)
    next_seq = fields.BigIntField(default=0)
    head = fields.BinaryField(null=True)
    session = fields.BinaryField(null=True)
    session_key = fields.BinaryField(null=True)
    revoked = fields.BigIntField(null=True)
    revoked_log_size = fields.BigIntField(null=True)
    revoked_reason = fields.CharField(max_length=500, null=True)

    class Meta:
        table = "device"


class EnrolmentToken(Model):
    """A one-time enrolment token (only its SHA-256 is stored)."""

    token_hash = fields.CharField(primary_key=True, max_length=64)
    device = fields.CharField(max_length=DEVICE_ID_LEN, null=True)
    created = fields.BigIntField()
    expires = fields.BigIntField()
    used = fields.BigIntField(null=True)
    used_by = fields.CharField(max_length=DEVICE_ID_LEN, null=True)

    class Meta:
        table = "enrolment_token"


class Record(Model):
    """A record accepted into a device chain and the transparency log, with its receipt."""

    id = fields.BigIntField(primary_key=True)
    device = fields.CharField(max_length=DEVICE_ID_LEN)
    seq = fields.BigIntField()
    digest = fields.BinaryField()
    encoded = fields.BinaryField()
    kind = fields.CharField(max_length=32)
    session = fields.BinaryField()
    boot = fields.BinaryField()
    t0 = fields.BigIntField()
    t1 = fields.BigIntField()
    m0 = fields.BigIntField()
    m1 = fields.BigIntField()
    officer = fields.CharField(max_length=200, null=True)
    incident = fields.CharField(max_length=200, null=True)
    case = fields.CharField(max_length=200, null=True)
    media_hash = fields.BinaryField(null=True)
    media_len = fields.BigIntField(null=True)
    anchor_size = fields.BigIntField(null=True)
    anchor_root = fields.BinaryField(null=True)
    log_index = fields.BigIntField(unique=True)
    received = fields.BigIntField()
    receipt = fields.BinaryField()
    #: Why the record is under quarantine (a fork, signed after revocation), if it is.
    quarantine = fields.CharField(max_length=200, null=True)

    class Meta:
        table = "record"
        unique_together = (("device", "seq"),)
        indexes = (("device", "t0"), ("incident",))


class LogNode(Model):
    """A perfect subtree of the transparency log, key = level * 2**48 + index."""

    key = fields.BigIntField(primary_key=True, generated=False)
    hash = fields.BinaryField()

    class Meta:
        table = "log_node"


class LogHead(Model):
    """The size of the log (one row, id 1, locked while appending)."""

    id = fields.IntField(primary_key=True, generated=False)
    size = fields.BigIntField()

    class Meta:
        table = "log_head"


class Checkpoint(Model):
    """A signed checkpoint, one per log size: the first one signed for that size."""

    size = fields.BigIntField(primary_key=True, generated=False)
    root = fields.BinaryField()
    time = fields.BigIntField()
    encoded = fields.BinaryField()

    class Meta:
        table = "checkpoint"


class Media(Model):
    """Media of a record held whole in the blob store, with its receipt."""

    id = fields.BigIntField(primary_key=True)
    device = fields.CharField(max_length=DEVICE_ID_LEN)
    seq = fields.BigIntField()
    record = fields.BinaryField()
    hash = fields.BinaryField()
    length = fields.BigIntField()
    blob = fields.CharField(max_length=200)
    stored = fields.BigIntField()
    receipt = fields.BinaryField()

    class Meta:
        table = "media"
        unique_together = (("device", "seq"),)


class PendingMedia(Model):
    """A segment record whose media the server does not hold yet (bookkeeping, not evidence).

    Written with the record, removed when the media is stored: coverage finds ``missing``
    media among these few rows instead of joining every segment of a device-year.
    """

    id = fields.BigIntField(primary_key=True)
    device = fields.CharField(max_length=DEVICE_ID_LEN)
    seq = fields.BigIntField()
    t0 = fields.BigIntField()
    t1 = fields.BigIntField()
    session = fields.BinaryField()
    incident = fields.CharField(max_length=200, null=True)

    class Meta:
        table = "pending_media"
        unique_together = (("device", "seq"),)
        indexes = (("device", "t0"), ("incident",))


class Quarantine(Model):
    """Material kept apart and marked: the other side of a fork, uploads after revocation."""

    id = fields.BigIntField(primary_key=True)
    device = fields.CharField(max_length=DEVICE_ID_LEN)
    seq = fields.BigIntField(null=True)
    digest = fields.BinaryField()
    encoded = fields.BinaryField()
    reason = fields.CharField(max_length=200)
    received = fields.BigIntField()

    class Meta:
        table = "quarantine"
        unique_together = (("device", "digest"),)


class OrphanBlob(Model):
    """A blob found in the store that no record vouches for (never deleted)."""

    blob = fields.CharField(primary_key=True, max_length=200)
    found = fields.BigIntField()
    size = fields.BigIntField()

    class Meta:
        table = "orphan_blob"


class Custody(Model):
    """The custody register: check-out and check-in of a device to an officer, hash-chained."""

    id = fields.BigIntField(primary_key=True)
    device = fields.CharField(max_length=DEVICE_ID_LEN)
    officer = fields.CharField(max_length=200)
    action = fields.CharField(max_length=16)
    time = fields.BigIntField()
    actor = fields.CharField(max_length=200)
    note = fields.CharField(max_length=1000, default="")
    prev = fields.BinaryField()
    hash = fields.BinaryField()

    class Meta:
        table = "custody"
        indexes = (("device", "time"),)


class RevocationList(Model):
    """A root-signed revocation list: the newest one is current."""

    id = fields.BigIntField(primary_key=True)
    issued = fields.BigIntField()
    encoded = fields.BinaryField()

    class Meta:
        table = "revocation_list"


class Alert(Model):
    """Something a person should look at: key makes repeated findings one alert."""

    id = fields.BigIntField(primary_key=True)
    key = fields.CharField(max_length=300, unique=True)
    device = fields.CharField(max_length=DEVICE_ID_LEN, null=True)
    kind = fields.CharField(max_length=64)
    severity = fields.CharField(max_length=16)
    message = fields.CharField(max_length=1000)
    time = fields.BigIntField()
    seq_from = fields.BigIntField(null=True)
    seq_to = fields.BigIntField(null=True)
    cleared = fields.BigIntField(null=True)

    class Meta:
        table = "alert"
        indexes = (("device", "time"),)


class Interval(Model):
    """Coverage: a merged run of recorded segments, or a gap between runs with its cause."""

    id = fields.BigIntField(primary_key=True)
    device = fields.CharField(max_length=DEVICE_ID_LEN)
    state = fields.CharField(max_length=8)
    cause = fields.CharField(max_length=32, null=True)
    start = fields.BigIntField()
    end = fields.BigIntField()
    seq_from = fields.BigIntField()
    seq_to = fields.BigIntField()
    segments = fields.BigIntField(default=0)
    session = fields.BinaryField()
    officer = fields.CharField(max_length=200, null=True)
    incident = fields.CharField(max_length=200, null=True)

    class Meta:
        table = "interval"
        indexes = (("device", "start"), ("incident",))


class CoverageCursor(Model):
    """How far coverage has read a device chain, and what it carries to the next record."""

    device = fields.CharField(primary_key=True, max_length=DEVICE_ID_LEN)
    seq = fields.BigIntField(default=0)
    state: fields.JSONField[dict[str, Any]] = fields.JSONField(default=dict)

    class Meta:
        table = "coverage_cursor"


class Event(Model):
    """A signed announcement received over MQTT, once per (device, boot, n)."""

    id = fields.BigIntField(primary_key=True)
    device = fields.CharField(max_length=DEVICE_ID_LEN)
    boot = fields.BinaryField()
    n = fields.BigIntField()
    kind = fields.CharField(max_length=32)
    time = fields.BigIntField()
    received = fields.BigIntField()
    body: fields.JSONField[dict[str, Any]] = fields.JSONField()

    class Meta:
        table = "event"
        unique_together = (("device", "boot", "n"),)


class FleetState(Model):
    """The newest health of a device, from telemetry, status and uploads."""

    device = fields.CharField(primary_key=True, max_length=DEVICE_ID_LEN)
    online = fields.BooleanField(default=False)
    last_seen = fields.BigIntField(null=True)
    battery_permille = fields.IntField(null=True)
    charging = fields.BooleanField(null=True)
    storage_free = fields.BigIntField(null=True)
    storage_total = fields.BigIntField(null=True)
    clock_offset_us = fields.BigIntField(null=True)
    backlog_records = fields.BigIntField(null=True)
    backlog_bytes = fields.BigIntField(null=True)
    recording = fields.BooleanField(null=True)
    last_upload = fields.BigIntField(null=True)

    class Meta:
        table = "fleet_state"
