"""Signed checkpoints of the transparency log, and the receipts the server gives devices.

A checkpoint is a COSE_Sign1 by a server key of ``{"v", "log", "size", "root", "time"}``.
A receipt is a COSE_Sign1 by a server key acknowledging that a record (kind ``record``,
with its log index, a checkpoint and the inclusion path to it) or its media (kind
``media``, with the ciphertext hash and length) is durably stored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from protocol import cose
from protocol.certs import TrustStore
from protocol.errors import DecodeError
from protocol.hashing import HASH_LEN
from protocol.keys import Signer
from protocol.log import verify_inclusion
from protocol.wire import (
    FORMAT_VERSION,
    check_device_id,
    check_map,
    check_version,
    get_bytes,
    get_int,
    get_text,
)


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The log named ``log`` had ``size`` entries with root ``root`` at ``time`` (µs)."""

    log: str
    size: int
    root: bytes
    time: int
    encoded: bytes = field(default=b"", compare=False)
    signer: bytes = field(default=b"", compare=False)

    def to_cbor(self) -> dict[str, Any]:
        """The signed payload map."""
        return {
            "v": FORMAT_VERSION,
            "log": self.log,
            "size": self.size,
            "root": self.root,
            "time": self.time,
        }

    def sign(self, signer: Signer) -> bytes:
        """The encoded COSE_Sign1."""
        return cose.sign_object(signer, cose.ContentType.CHECKPOINT, self.to_cbor())

    @classmethod
    def parse(cls, data: bytes) -> tuple[Checkpoint, cose.Sign1]:
        """Parse (signature unchecked)."""
        msg = cose.decode(data, cose.ContentType.CHECKPOINT)
        what = "checkpoint"
        body = check_map(msg.body(what), what, {"v", "log", "size", "root", "time"})
        check_version(body, what)
        cp = cls(
            get_text(body, "log", what, limit=200),
            get_int(body, "size", what),
            get_bytes(body, "root", what, size=HASH_LEN),
            get_int(body, "time", what),
            bytes(data),
            msg.kid,
        )
        return cp, msg

    @classmethod
    def load(cls, data: bytes, trust: TrustStore) -> Checkpoint:
        """Parse and check the server signature against ``trust``."""
        cp, msg = cls.parse(data)
        trust.verify_server_signed(msg)
        return cp


class ReceiptKind(StrEnum):
    """What a receipt acknowledges."""

    RECORD = "record"
    MEDIA = "media"


@dataclass(frozen=True, slots=True)
class Receipt:
    """The server's signed acknowledgement that something is durably stored."""

    kind: ReceiptKind
    device: str
    seq: int
    record: bytes
    time: int
    index: int | None = None
    checkpoint: bytes | None = None
    path: tuple[bytes, ...] = ()
    media_hash: bytes | None = None
    media_len: int | None = None
    encoded: bytes = field(default=b"", compare=False)

    def to_cbor(self) -> dict[str, Any]:
        """The signed payload map."""
        body: dict[str, Any] = {
            "v": FORMAT_VERSION,
            "kind": self.kind.value,
            "device": self.device,
            "seq": self.seq,
            "record": self.record,
            "time": self.time,
        }
        if self.kind is ReceiptKind.RECORD:
            body.update(index=self.index, checkpoint=self.checkpoint, path=list(self.path))
        else:
            body.update(hash=self.media_hash, len=self.media_len)
        return body

    def sign(self, signer: Signer) -> bytes:
        """The encoded COSE_Sign1."""
        return cose.sign_object(signer, cose.ContentType.RECEIPT, self.to_cbor())

    @classmethod
    def parse(cls, data: bytes) -> tuple[Receipt, cose.Sign1]:
        """Parse (signatures unchecked)."""
        msg = cose.decode(data, cose.ContentType.RECEIPT)
        what = "receipt"
        raw = msg.body(what)
        base = {"v", "kind", "device", "seq", "record", "time"}
        kind_text = raw.get("kind") if isinstance(raw, dict) else None
        if kind_text == ReceiptKind.RECORD.value:
            body = check_map(raw, what, base | {"index", "checkpoint", "path"})
        elif kind_text == ReceiptKind.MEDIA.value:
            body = check_map(raw, what, base | {"hash", "len"})
        else:
            raise DecodeError(f"{what}: unknown kind {kind_text!r}")
        check_version(body, what)
        kind = ReceiptKind(kind_text)
        device = check_device_id(body["device"], what)
        seq = get_int(body, "seq", what)
        record = get_bytes(body, "record", what, size=HASH_LEN)
        time = get_int(body, "time", what)
        if kind is ReceiptKind.RECORD:
            path = body["path"]
            if (
                not isinstance(path, list | tuple)
                or len(path) > 64
                or not all(isinstance(p, bytes) and len(p) == HASH_LEN for p in path)
            ):
                raise DecodeError(f"{what}: path must be at most 64 hashes")
            receipt = cls(
                kind,
                device,
                seq,
                record,
                time,
                index=get_int(body, "index", what),
                checkpoint=get_bytes(body, "checkpoint", what, limit=4096),
                path=tuple(path),
                encoded=bytes(data),
            )
        else:
            receipt = cls(
                kind,
                device,
                seq,
                record,
                time,
                media_hash=get_bytes(body, "hash", what, size=HASH_LEN),
                media_len=get_int(body, "len", what),
                encoded=bytes(data),
            )
        return receipt, msg

    @classmethod
    def load(cls, data: bytes, trust: TrustStore) -> Receipt:
        """Parse and check the server signature, and for a record receipt its proof."""
        receipt, msg = cls.parse(data)
        trust.verify_server_signed(msg)
        if receipt.kind is ReceiptKind.RECORD:
            if receipt.checkpoint is None or receipt.index is None:
                raise DecodeError("record receipt without its checkpoint")
            cp = Checkpoint.load(receipt.checkpoint, trust)
            verify_inclusion(receipt.index, cp.size, receipt.record, receipt.path, cp.root)
        return receipt
