"""Building the device chain: each record gets the next seq, links to the previous one,
carries the officer and incident binding and the newest checkpoint seen, and is signed by
the session key. Media is sealed (HPKE to the server key) before its record is made.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agent.signing.session import SessionKey, new_session
from protocol import media as envelope
from protocol.hashing import ZERO_HASH
from protocol.keys import Signer
from protocol.record import (
    Anchor,
    ClockState,
    MediaRef,
    Record,
    RecordKind,
    SignedRecord,
    Suite,
)


@dataclass(frozen=True, slots=True)
class Span:
    """When something happened: wall and monotonic start and end, µs, and the clock state."""

    t0: int
    t1: int
    m0: int
    m1: int
    clock: ClockState

    @classmethod
    def instant(cls, wall: int, mono: int, clock: ClockState) -> Span:
        """A zero-length span."""
        return cls(wall, wall, mono, mono, clock)


@dataclass(frozen=True, slots=True)
class Binding:
    """Who wears the device and which incident is open: bound into every record."""

    officer: str | None = None
    incident: str | None = None
    case: str | None = None


class ChainWriter:
    """The chain's head and the current session; makes signed records in order.

    Not thread-safe: one writer task owns it. :meth:`make` does not advance the head;
    :meth:`commit` does, once the record is durable, so a failed write reuses nothing.
    """

    def __init__(
        self,
        device: str,
        suite: Suite,
        device_signer: Signer,
        recipient: bytes,
        boot: bytes,
        next_seq: int = 0,
        prev: bytes = ZERO_HASH,
    ) -> None:
        self.device = device
        self.suite = suite
        self.device_signer = device_signer
        self.recipient = recipient
        self.boot = boot
        self.next_seq = next_seq
        self.prev = prev
        self.session: SessionKey | None = None
        self.binding = Binding()
        self.anchor: Anchor | None = None

    def start_session(self, issued: int) -> SessionKey:
        """A new session key (the opening record is made with :meth:`make`)."""
        self.session = new_session(self.device, self.device_signer, issued)
        return self.session

    def seal(self, data: bytes, seq: int) -> envelope.SealedMedia:
        """Encrypt media for record ``seq`` to the server's key."""
        if self.session is None:
            raise RuntimeError("no session")
        return envelope.seal(
            data, self.recipient, self.suite, self.device, self.session.session, seq
        )

    def make(
        self,
        kind: RecordKind,
        span: Span,
        body: Mapping[str, Any] | None = None,
        media: MediaRef | None = None,
    ) -> SignedRecord:
        """Sign the record that would come next."""
        if self.session is None:
            raise RuntimeError("no session")
        record = Record(
            suite=self.suite,
            device=self.device,
            session=self.session.session,
            boot=self.boot,
            seq=self.next_seq,
            prev=self.prev,
            kind=kind,
            t0=span.t0,
            t1=span.t1,
            m0=span.m0,
            m1=span.m1,
            clock=span.clock,
            body=dict(body or {}),
            officer=self.binding.officer,
            incident=self.binding.incident,
            case=self.binding.case,
            media=media,
            anchor=self.anchor,
        )
        return SignedRecord.create(record, self.session.signer)

    def commit(self, signed: SignedRecord) -> None:
        """Advance the head past ``signed`` (call once it is durable)."""
        if signed.record.seq != self.next_seq:
            raise RuntimeError(f"commit of seq {signed.record.seq}, head at {self.next_seq}")
        self.next_seq += 1
        self.prev = signed.digest
