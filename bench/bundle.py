"""Export bundles of any size for the verifier's figures (``unbroken bench verify``).

:func:`make_bundle` writes a bundle in the protocol's format with real keys, signatures,
HPKE-sealed media and Merkle proofs, as the server's exporter would: one device, one
session of ``segments`` segments of ``media_bytes`` each, the device embedding a new
checkpoint every ``checkpoint_every`` segments (as if it synced then). It streams: media
go to disk as they are sealed and only the encoded records (about 600 B each) stay in
memory, so a 10,000-segment bundle costs a few MB to make.

Media files are written without an fsync each (nothing here is evidence; the bundle's
durability is not what is measured); the chain, trust and log files go through
:class:`protocol.bundle.BundleWriter` as the exporter's do.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from pathlib import Path

from agent.signing.chain import ChainWriter, Span
from protocol import layout
from protocol.bundle import BundleWriter
from protocol.certs import Certificate, KeyKind, RootKey
from protocol.checkpoint import Checkpoint
from protocol.hashing import sha256
from protocol.keys import EncryptionKey, SoftwareSigner
from protocol.log import MemoryTree
from protocol.manifest import ChainRange, Manifest
from protocol.record import Anchor, ClockState, MediaRef, RecordKind, Suite

DEVICE = "bench-verify-001"
LOG_NAME = "unbroken-bench-log"
T0 = 1_790_000_000_000_000  # 2026-09-21, µs
SEGMENT_US = 1_000_000
MEDIA_BYTES = 100_000
CHECKPOINT_EVERY = 500

#: Called with (segments made, segments in all).
Made = Callable[[int, int], None]


def make_bundle(
    out: Path,
    segments: int,
    *,
    media_bytes: int = MEDIA_BYTES,
    checkpoint_every: int = CHECKPOINT_EVERY,
    made: Made | None = None,
) -> str:
    """Write a bundle of ``segments`` segments to ``out`` (new or empty); return the root
    fingerprint to pin."""
    root = SoftwareSigner.generate()
    server = SoftwareSigner.generate()
    encryption = EncryptionKey.generate()
    device_key = SoftwareSigner.generate()
    certs = [
        Certificate.issue(root, KeyKind.SERVER, "server", server.public_key, T0 - 10**9),
        Certificate.issue(root, KeyKind.ENCRYPTION, "server", encryption.public_key, T0 - 10**9),
        Certificate.issue(root, KeyKind.DEVICE, DEVICE, device_key.public_key, T0),
    ]
    writer = BundleWriter(out)
    chain = ChainWriter(DEVICE, Suite.CHACHA, device_key, encryption.public_key, os.urandom(16))
    tree = MemoryTree()
    checkpoints: list[bytes] = []
    records: list[bytes] = []
    clock = ClockState("ntp", 1200, True)
    wall, mono = T0, 5_000_000

    def span(duration: int) -> Span:
        nonlocal wall, mono
        s = Span(wall, wall + duration, mono, mono + duration, clock)
        wall += duration
        mono += duration
        return s

    def log_all() -> None:
        while tree.size < len(records):
            tree.append(_digest(records[tree.size]))
        if not checkpoints or Checkpoint.parse(checkpoints[-1])[0].size != tree.size:
            cp = Checkpoint(LOG_NAME, tree.size, tree.root(), wall + 1_000_000)
            checkpoints.append(cp.sign(server))
        last, _ = Checkpoint.parse(checkpoints[-1])
        chain.anchor = Anchor(last.size, last.root)

    key = chain.start_session(wall)
    opened = chain.make(
        RecordKind.SESSION_OPEN, span(0), {"cert": key.certificate, "reason": "duty"}
    )
    chain.commit(opened)
    records.append(opened.encoded)
    payload = os.urandom(media_bytes)
    media_dir = out / layout.BUNDLE_MEDIA_DIR / DEVICE
    media_dir.mkdir(parents=True)
    for i in range(segments):
        seq = chain.next_seq
        sealed = chain.seal(payload, seq)
        ref = MediaRef(sealed.hash, len(sealed.data), sealed.commitment, "video/mp2t")
        signed = chain.make(RecordKind.SEGMENT, span(SEGMENT_US), {"frames": 25}, ref)
        chain.commit(signed)
        records.append(signed.encoded)
        (out / layout.bundle_media(DEVICE, seq)).write_bytes(sealed.data)
        if i % checkpoint_every == 0:
            log_all()
        if made is not None and (i + 1) % 100 == 0:
            made(i + 1, segments)
    closed = chain.make(RecordKind.SESSION_CLOSE, span(0), {"reason": "off_duty"})
    chain.commit(closed)
    records.append(closed.encoded)
    log_all()

    final, _ = Checkpoint.parse(checkpoints[-1])
    root_cose = RootKey.issue(root, "unbroken bench fleet", T0 - 10**9)
    writer.trust(root_cose, certs, None)
    sizes = [Checkpoint.parse(c)[0].size for c in checkpoints]
    proofs = [
        layout.ConsistencyProof(a, b, tuple(tree.consistency(a, b))).encode()
        for a, b in itertools.pairwise(sizes)
    ]
    writer.log(checkpoints, proofs)
    writer.begin_chain(DEVICE)
    for index, encoded in enumerate(records):
        proof = layout.LogProof(index, final.size, tuple(tree.inclusion(index, final.size)))
        writer.entry(layout.ChainEntry(encoded, proof))
    first, last = opened.record, closed
    ranges = (ChainRange(DEVICE, 0, last.record.seq, first.prev, last.digest, len(records)),)
    manifest = Manifest(
        final.time, LOG_NAME, "unbroken bench", "whole chain", ranges, False, writer.files
    )
    writer.finish(manifest.sign(server))
    if made is not None:
        made(segments, segments)
    return root.fingerprint


def _digest(encoded: bytes) -> bytes:
    return sha256(encoded)


def bundle_size(folder: Path) -> int:
    """Bytes of every file under ``folder``."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
