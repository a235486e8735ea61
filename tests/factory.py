"""Builds real evidence for tests: a fleet root, server keys, devices recording chains,
a transparency log, and export bundles in the protocol format.

Everything is real (keys, signatures, HPKE, Merkle proofs); only the timing is synthetic.
Tests tamper with what it writes and check that the verifier notices.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from pathlib import Path

from agent.signing.chain import ChainWriter, Span
from protocol import layout
from protocol.bundle import BundleWriter
from protocol.certs import Certificate, KeyKind, Revocation, RootKey, issue_revocations
from protocol.checkpoint import Checkpoint
from protocol.keys import EncryptionKey, SoftwareSigner
from protocol.log import MemoryTree
from protocol.manifest import ChainRange, Manifest
from protocol.media import open_sealed
from protocol.record import Anchor, ClockState, MediaRef, RecordKind, SignedRecord, Suite

T0 = 1_790_000_000_000_000  # 2026-09-21, µs
SEGMENT_US = 1_000_000
LOG_NAME = "unbroken-test-log"


@dataclass
class Entry:
    """A record the device made, with what belongs to it."""

    signed: SignedRecord
    media: bytes | None = None
    index: int | None = None


@dataclass
class Device:
    """A simulated device writing its chain in memory."""

    fleet: Fleet
    device_id: str
    signer: SoftwareSigner
    cert: bytes
    writer: ChainWriter
    wall: int = T0
    mono: int = 5_000_000
    entries: list[Entry] = field(default_factory=list)
    clock: ClockState = field(default_factory=lambda: ClockState("ntp", 1200, True))

    def _span(self, duration: int) -> Span:
        span = Span(self.wall, self.wall + duration, self.mono, self.mono + duration, self.clock)
        self.wall += duration
        self.mono += duration
        return span

    def _commit(self, signed: SignedRecord, media: bytes | None = None) -> Entry:
        self.writer.commit(signed)
        entry = Entry(signed, media)
        self.entries.append(entry)
        return entry

    def open_session(self, reason: str = "duty") -> Entry:
        """Start a session with a fresh session key."""
        key = self.writer.start_session(self.wall)
        signed = self.writer.make(
            RecordKind.SESSION_OPEN, self._span(0), {"cert": key.certificate, "reason": reason}
        )
        return self._commit(signed)

    def event(self, kind: RecordKind, body: dict[str, object] | None = None) -> Entry:
        """A record without media."""
        return self._commit(self.writer.make(kind, self._span(0), body or {}))

    def segment(self, duration: int = SEGMENT_US, payload: bytes | None = None) -> Entry:
        """A sealed segment of (fake) video."""
        seq = self.writer.next_seq
        data = payload if payload is not None else os.urandom(256) + seq.to_bytes(8, "big")
        sealed = self.writer.seal(data, seq)
        ref = MediaRef(sealed.hash, len(sealed.data), sealed.commitment, "video/mp2t")
        signed = self.writer.make(RecordKind.SEGMENT, self._span(duration), {"frames": 25}, ref)
        return self._commit(signed, sealed.data)

    def close(self) -> Entry:
        """Close the session cleanly."""
        return self.event(RecordKind.SESSION_CLOSE, {"reason": "off_duty"})

    def crash_and_reboot(self, downtime: int = 3_000_000) -> Entry:
        """Lose power, boot, open a session and write the recovery record."""
        last = self.entries[-1].signed
        self.writer.boot = os.urandom(16)
        self.wall += downtime
        self.mono = 2_000_000  # monotonic restarts with the boot
        self.open_session(reason="boot")
        return self.event(
            RecordKind.RECOVERY,
            {
                "last_seq": last.record.seq,
                "last_hash": last.digest,
                "prev_boot": last.record.boot,
                "prev_session": last.record.session,
                "torn": [],
                "last_end": last.record.t1,
            },
        )

    def shift(self, segments: int) -> None:
        """Open, record ``segments`` segments, close."""
        self.open_session()
        for _ in range(segments):
            self.segment()
        self.close()

    def log_all(self) -> None:
        """Send every unlogged record to the fleet's log (like a sync)."""
        for entry in self.entries:
            if entry.index is None:
                entry.index = self.fleet.log.append(entry.signed.digest)
        self.writer.anchor = self.fleet.checkpoint_anchor()


class Fleet:
    """A fleet root, a server key, an encryption key and a log."""

    def __init__(self, name: str = "Test Bureau fleet", suite: Suite = Suite.CHACHA) -> None:
        self.root = SoftwareSigner.generate()
        self.server = SoftwareSigner.generate()
        self.encryption = EncryptionKey.generate()
        self.suite = suite
        self.root_cose = RootKey.issue(self.root, name, T0 - 10**9)
        self.server_cert = Certificate.issue(
            self.root, KeyKind.SERVER, "server", self.server.public_key, T0 - 10**9
        )
        self.encryption_cert = Certificate.issue(
            self.root, KeyKind.ENCRYPTION, "server", self.encryption.public_key, T0 - 10**9
        )
        self.devices: dict[str, Device] = {}
        self.log = MemoryTree()
        self.checkpoints: list[bytes] = []
        self.revocations: bytes | None = None

    @property
    def fingerprint(self) -> str:
        """The root fingerprint to pin."""
        return self.root.fingerprint

    def device(self, device_id: str) -> Device:
        """Enrol a device."""
        signer = SoftwareSigner.generate()
        cert = Certificate.issue(self.root, KeyKind.DEVICE, device_id, signer.public_key, T0)
        writer = ChainWriter(
            device_id, self.suite, signer, self.encryption.public_key, os.urandom(16)
        )
        dev = Device(self, device_id, signer, cert, writer)
        self.devices[device_id] = dev
        return dev

    def checkpoint(self, time: int | None = None) -> bytes:
        """Sign a checkpoint of the log as it is now (once per size)."""
        size = self.log.size
        if self.checkpoints:
            last, _ = Checkpoint.parse(self.checkpoints[-1])
            if last.size == size:
                return self.checkpoints[-1]
        now = max((d.wall for d in self.devices.values()), default=T0) + 1_000_000
        cp = Checkpoint(LOG_NAME, size, self.log.root(), time or now)
        data = cp.sign(self.server)
        self.checkpoints.append(data)
        return data

    def checkpoint_anchor(self) -> Anchor:
        """Checkpoint now, as a device would embed it."""
        cp, _ = Checkpoint.parse(self.checkpoint())
        return Anchor(cp.size, cp.root)

    def revoke(self, device_id: str, reason: str = "lost") -> None:
        """Revoke a device as of the log's current size."""
        dev = self.devices[device_id]
        entry = Revocation(device_id, dev.signer.kid, dev.wall, self.log.size, reason)
        self.revocations = issue_revocations(self.root, dev.wall, [entry])

    def export(
        self,
        out: Path,
        devices: list[str] | None = None,
        *,
        openings: bool = True,
        signer: SoftwareSigner | None = None,
    ) -> Path:
        """Write a bundle of the given devices' whole chains (all logged first)."""
        for dev in self.devices.values():
            dev.log_all()
        final_bytes = self.checkpoint()
        final, _ = Checkpoint.parse(final_bytes)
        writer = BundleWriter(out)
        certs = [self.server_cert, self.encryption_cert] + [d.cert for d in self.devices.values()]
        writer.trust(self.root_cose, certs, self.revocations)
        sizes = [Checkpoint.parse(c)[0].size for c in self.checkpoints]
        proofs = [
            layout.ConsistencyProof(a, b, tuple(self.log.consistency(a, b))).encode()
            for a, b in itertools.pairwise(sizes)
        ]
        writer.log(self.checkpoints, proofs)
        chains = []
        for device_id in devices or list(self.devices):
            dev = self.devices[device_id]
            writer.begin_chain(device_id)
            for entry in dev.entries:
                assert entry.index is not None
                proof = layout.LogProof(
                    entry.index, final.size, tuple(self.log.inclusion(entry.index, final.size))
                )
                writer.entry(layout.ChainEntry(entry.signed.encoded, proof))
                if entry.media is not None:
                    opening = None
                    if openings:
                        rec = entry.signed.record
                        salt, plain = open_sealed(
                            entry.media, self.encryption, rec.device, rec.session, rec.seq
                        )
                        opening = salt + plain
                    writer.media(device_id, entry.signed.record.seq, entry.media, opening)
            first, last = dev.entries[0].signed, dev.entries[-1].signed
            chains.append(
                ChainRange(
                    device_id,
                    first.record.seq,
                    last.record.seq,
                    first.record.prev,
                    last.digest,
                    len(dev.entries),
                )
            )
        manifest = Manifest(
            final.time,
            LOG_NAME,
            "test exporter",
            "whole chains",
            tuple(chains),
            openings,
            writer.files,
        )
        writer.finish(manifest.sign(signer or self.server))
        return out
