"""Write the known-answer test vectors: ``python -m protocol.vectors.generate [--fresh]``.

Every key is derived from a public seed text (``SHA-256(b"unbroken test root")`` and so on):
they are TEST KEYS, published so that anyone can reproduce every byte, and worthless as
secrets. Signatures are Ed25519 (deterministic), so everything is reproducible except the
HPKE ciphertexts, whose ephemeral key is random. The media envelopes already committed in
``media.json`` are therefore kept when they still decrypt, with the fixed key, to the
expected salt and media; ``--fresh`` seals them anew, which changes the records that vouch
for them (their hash) and everything that depends on those records.

The vectors form one story: device ``cam-001`` records a session, loses power, boots,
writes a recovery record naming the torn journal tail, and writes one record of every
kind; the server logs the records, signs checkpoints and receipts, and exports a bundle.
``bundle.json`` and ``store.json`` hold every file of that bundle and of the device store,
with what ``verify`` says about them.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import math
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import cbor2

from protocol import api, cbor, cose, layout, log, media, topics
from protocol.bundle import README
from protocol.certs import Certificate, KeyKind, Revocation, RootKey, issue_revocations
from protocol.checkpoint import Checkpoint, Receipt, ReceiptKind
from protocol.errors import ProtocolError
from protocol.events import Event, EventKind
from protocol.hashing import ZERO_HASH, sha256
from protocol.journal import JournalScan
from protocol.keys import EncryptionKey, SoftwareSigner
from protocol.manifest import ChainRange, Manifest
from protocol.record import Anchor, ClockState, MediaRef, Record, RecordKind, SignedRecord, Suite

HERE = Path(__file__).resolve().parent
WARNING = (
    "TEST KEYS: every key here is derived from a public seed text and protects nothing. "
    "Never use them outside tests."
)
DEVICE = "cam-001"
OTHER_DEVICE = "cam-002"
LOG_NAME = "unbroken-test-log"
T0 = 1_790_000_000_000_000  # 2026-09-21T14:13:20Z, microseconds
CLOCK = ClockState("ntp", 1200, True)
OFFICER = "badge-4711"
INCIDENT = "INC-2026-0042"
CASE = "CASE-17"
FILES = (
    "keys.json",
    "cbor.json",
    "cose.json",
    "certs.json",
    "media.json",
    "records.json",
    "log.json",
    "checkpoint.json",
    "journal.json",
    "events.json",
    "api.json",
    "bundle.json",
    "store.json",
)
Vectors = dict[str, dict[str, Any]]


def seed(text: str) -> bytes:
    """The 32-byte seed of a test key: SHA-256 of its seed text."""
    return sha256(text.encode())


def test_id(text: str) -> bytes:
    """A 16-byte test identifier (session or boot id): the first half of SHA-256 of text."""
    return sha256(text.encode())[:16]


# --------------------------------------------------------------------------- diagnostic


def diag(value: Any) -> str:
    """RFC 8949 section 8 diagnostic notation of a decoded value (byte strings as h'')."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return repr(value)
    if isinstance(value, bytes):
        return f"h'{value.hex()}'"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(diag(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{diag(k)}: {diag(v)}" for k, v in value.items()) + "}"
    if isinstance(value, cbor2.CBORTag):
        return f"{value.tag}({diag(value.value)})"
    raise TypeError(f"no diagnostic notation for {type(value).__name__}")


def diag_of(data: bytes) -> str:
    """Diagnostic notation of deterministic CBOR bytes (tags allowed)."""
    return diag(cbor.decode(data, allow_tags=True))


# --------------------------------------------------------------------------- keys


class Keys:
    """The fixed test keys and identifiers."""

    def __init__(self) -> None:
        self.ed25519: dict[str, tuple[str, SoftwareSigner]] = {}
        for name, text in (
            ("root", "unbroken test root"),
            ("server", "unbroken test server"),
            ("device", f"unbroken test device {DEVICE}"),
            ("session_1", "unbroken test session 1"),
            ("session_2", "unbroken test session 2"),
            ("other_device", f"unbroken test device {OTHER_DEVICE}"),
        ):
            self.ed25519[name] = (text, SoftwareSigner.from_seed(seed(text)))
        self.encryption_text = "unbroken test encryption"
        self.encryption = EncryptionKey.from_seed(seed(self.encryption_text))
        self.session_id = {
            1: test_id("unbroken test session id 1"),
            2: test_id("unbroken test session id 2"),
        }
        self.boot_id = {1: test_id("unbroken test boot 1"), 2: test_id("unbroken test boot 2")}

    def __getitem__(self, name: str) -> SoftwareSigner:
        return self.ed25519[name][1]

    def vectors(self) -> dict[str, Any]:
        return {
            "warning": WARNING,
            "ed25519": [
                {
                    "name": name,
                    "seed_text": text,
                    "seed": seed(text).hex(),
                    "public_key": signer.public_key.hex(),
                    "kid": signer.kid.hex(),
                    "fingerprint": signer.fingerprint,
                }
                for name, (text, signer) in self.ed25519.items()
            ],
            "x25519": [
                {
                    "name": "encryption",
                    "seed_text": self.encryption_text,
                    "private_key": seed(self.encryption_text).hex(),
                    "public_key": self.encryption.public_key.hex(),
                }
            ],
            "ids": {
                "device": DEVICE,
                "session_1": self.session_id[1].hex(),
                "session_2": self.session_id[2].hex(),
                "boot_1": self.boot_id[1].hex(),
                "boot_2": self.boot_id[2].hex(),
            },
        }


# --------------------------------------------------------------------------- cbor


def cbor_vectors() -> dict[str, Any]:
    """Deterministic encodings, and encodings the strict decoder must refuse."""
    samples: list[tuple[str, Any]] = [
        ("zero", 0),
        ("largest one-byte head", 23),
        ("smallest 1-byte argument", 24),
        ("largest 1-byte argument", 255),
        ("smallest 2-byte argument", 256),
        ("smallest 4-byte argument", 65536),
        ("smallest 8-byte argument", 1 << 32),
        ("largest field integer (2^63-1)", (1 << 63) - 1),
        ("minus one", -1),
        ("minus 25", -25),
        ("empty byte string", b""),
        ("byte string", bytes.fromhex("00ff10")),
        ("empty text", ""),
        ("text", "unbroken"),
        ("non-ASCII text (UTF-8)", "Grüße"),
        ("array", [1, [2, 3]]),
        ("empty map", {}),
        ("false", False),
        ("true", True),
        ("null", None),
        ("float, shortest form", 1.5),
        ("map with text keys, sorted", {"v": 1, "kind": "root", "alg": "Ed25519", "created": 7}),
        ("COSE protected header", {1: -8, 3: "application/vnd.unbroken.record+cbor", 4: bytes(32)}),
        ("map with mixed key types: length first, then bytewise", {"a": 1, 1000: 2, -1: 3}),
    ]
    invalid: list[tuple[str, str, str]] = [
        ("empty input", "", "nothing to decode"),
        ("integer not in its shortest form", "1817", "23 with a 1-byte argument"),
        ("length not in its shortest form", "580100", "one-byte string with a 1-byte length"),
        ("indefinite-length byte string", "5f4100ff", "indefinite lengths are refused"),
        ("indefinite-length array", "9f01ff", "indefinite lengths are refused"),
        ("map keys out of order", "a2616202616101", '{"b": 2, "a": 1}'),
        ("duplicate map key", "a2616101616102", '{"a": 1, "a": 2}'),
        ("trailing bytes", "0000", "two items where one is expected"),
        ("truncated array", "8201", "array of two with one item"),
        ("reserved additional information", "1c", "additional information 28"),
        ("invalid UTF-8", "61ff", "text must be UTF-8"),
        ("float not in its shortest form", "fa3fc00000", "1.5 as a single-precision float"),
        ("tag (epoch time)", "c11a5f5e1000", "no tags outside the COSE envelope"),
        ("tag (date/time text)", "c074323031332d30332d32315432303a30343a30305a", "no tags"),
        ("bignum", "c249010000000000000000", "2^64 as a bignum tag"),
        ("undefined", "f7", "simple values other than false, true, null are refused"),
        ("nested deeper than 16", "81" * 17 + "00", "at most 16 nested containers"),
    ]
    return {
        "valid": [
            {"name": name, "diag": diag_of(cbor.encode(value)), "hex": cbor.encode(value).hex()}
            for name, value in samples
        ],
        "invalid": [{"name": n, "hex": h, "why": w} for n, h, w in invalid],
    }


# --------------------------------------------------------------------------- cose


def cose_vectors(keys: Keys, root_cose: bytes) -> dict[str, Any]:
    """The root's self-signed COSE_Sign1 taken apart, and envelopes ``decode`` refuses."""
    msg = cose.decode(root_cose, cose.ContentType.ROOT)
    signer = keys["root"]

    def envelope(protected: Any, unprotected: Any, signature: bytes, tag: int = 18) -> str:
        header = cbor.encode(protected) if isinstance(protected, dict) else protected
        return cbor.encode(cbor2.CBORTag(tag, [header, unprotected, msg.payload, signature])).hex()

    ct = str(cose.ContentType.ROOT)
    good = {1: -8, 3: ct, 4: signer.kid}
    flipped = bytes([msg.signature[0] ^ 1]) + msg.signature[1:]
    # {4: kid, 1: -8, 3: ct}: the same header with its keys in the wrong order
    unordered = b"\xa3" + b"".join(cbor.encode(k) + cbor.encode(good[k]) for k in (4, 1, 3))
    return {
        "signer": "root",
        "public_key": signer.public_key.hex(),
        "kid": signer.kid.hex(),
        "content_type": ct,
        "protected": msg.protected.hex(),
        "protected_diag": diag_of(msg.protected),
        "payload": msg.payload.hex(),
        "payload_diag": diag_of(msg.payload),
        "sig_structure": msg.to_be_signed().hex(),
        "sig_structure_diag": diag_of(msg.to_be_signed()),
        "signature": msg.signature.hex(),
        "cose_sign1": root_cose.hex(),
        "cose_sign1_diag": diag_of(root_cose),
        "digest": msg.digest.hex(),
        "bad_signature": envelope(good, {}, flipped),
        "invalid": [
            {
                "name": "alg ES256 (-7)",
                "error": "AlgorithmError",
                "hex": envelope({1: -7, 3: ct, 4: signer.kid}, {}, msg.signature),
            },
            {
                "name": "alg as text",
                "error": "AlgorithmError",
                "hex": envelope({1: "EdDSA", 3: ct, 4: signer.kid}, {}, msg.signature),
            },
            {
                "name": "untagged array",
                "error": "DecodeError",
                "hex": cbor.encode([cbor.encode(good), {}, msg.payload, msg.signature]).hex(),
            },
            {
                "name": "tag 98 (COSE_Sign)",
                "error": "DecodeError",
                "hex": envelope(good, {}, msg.signature, tag=98),
            },
            {
                "name": "unprotected header not empty",
                "error": "DecodeError",
                "hex": envelope(good, {4: signer.kid}, msg.signature),
            },
            {
                "name": "extra protected header",
                "error": "DecodeError",
                "hex": envelope({**good, 2: [1]}, {}, msg.signature),
            },
            {
                "name": "kid of 31 bytes",
                "error": "DecodeError",
                "hex": envelope({1: -8, 3: ct, 4: signer.kid[:31]}, {}, msg.signature),
            },
            {
                "name": "signature of 63 bytes",
                "error": "DecodeError",
                "hex": envelope(good, {}, msg.signature[:63]),
            },
            {
                "name": "unknown content type",
                "error": "DecodeError",
                "hex": envelope({1: -8, 3: "application/cbor", 4: signer.kid}, {}, msg.signature),
            },
            {
                "name": "protected header keys out of order",
                "error": "DecodeError",
                "hex": envelope(unordered, {}, msg.signature),
            },
        ],
    }


# --------------------------------------------------------------------------- the story


def signed_vector(data: bytes) -> dict[str, Any]:
    """A COSE_Sign1 with its payload, in hex and diagnostic notation."""
    msg = cose.decode(data)
    return {
        "payload": msg.payload.hex(),
        "payload_diag": diag_of(msg.payload),
        "cose": data.hex(),
        "kid": msg.kid.hex(),
        "digest": msg.digest.hex(),
    }


def media_bytes(seq: int, kind: str) -> bytes:
    """The (fake) media of a record: readable text, so that an opening is easy to check."""
    return f"unbroken test {kind} of {DEVICE} seq {seq}; not real video".encode()


class Story:
    """Device cam-001's chain, the server's log, and what is exported and stored."""

    def __init__(self, keys: Keys, reuse: Mapping[str, bytes]) -> None:
        self.keys = keys
        self.reuse = reuse
        root, server = keys["root"], keys["server"]
        issued = T0 - 86_400_000_000
        self.root = RootKey.issue(root, "unbroken test fleet", issued)
        self.device_cert = Certificate.issue(
            root, KeyKind.DEVICE, DEVICE, keys["device"].public_key, issued
        )
        self.server_cert = Certificate.issue(
            root, KeyKind.SERVER, "server", server.public_key, issued
        )
        self.encryption_cert = Certificate.issue(
            root, KeyKind.ENCRYPTION, "server", keys.encryption.public_key, issued
        )
        self.session_cert = {
            n: Certificate.issue(
                keys["device"],
                KeyKind.SESSION,
                DEVICE,
                keys[f"session_{n}"].public_key,
                T0 + (n - 1) * 10_000_000,
                session=keys.session_id[n],
            )
            for n in (1, 2)
        }
        self.revocations = issue_revocations(
            root,
            T0 - 3_600_000_000,
            [
                Revocation(
                    OTHER_DEVICE,
                    keys["other_device"].kid,
                    T0 - 3_600_000_000,
                    0,
                    "reported lost",
                )
            ],
        )
        self.certs = [self.server_cert, self.encryption_cert, self.device_cert]
        self.records: list[SignedRecord] = []
        self.sessions: list[int] = []
        self.media: dict[int, tuple[str, media.SealedMedia, bytes, bytes]] = {}
        self.media_vectors: list[dict[str, Any]] = []
        self.tree = log.MemoryTree()
        self.checkpoints: list[bytes] = []
        self.anchor: Anchor | None = None
        self.torn_bytes = b"\x59\x01\x00torn: power was lost in the middle of this append"
        self._write()

    # ------------------------------------------------------------------ media
    def seal(
        self, name: str, plain: bytes, salt: bytes, suite: Suite, session: bytes, seq: int
    ) -> media.SealedMedia:
        """Seal media, or keep the committed envelope if it still opens to the same bytes."""
        old = self.reuse.get(name)
        if old is not None:
            try:
                got = media.open_sealed(
                    old, self.keys.encryption, DEVICE, session, seq, suite=suite
                )
            except ProtocolError:
                got = None
            if got == (salt, plain):
                return media.SealedMedia(old, media.commitment(salt, plain))
        return media.seal(
            plain, self.keys.encryption.public_key, suite, DEVICE, session, seq, salt=salt
        )

    def media_vector(
        self,
        name: str,
        sealed: media.SealedMedia,
        suite: Suite,
        session: bytes,
        seq: int,
        salt: bytes,
        plain: bytes,
    ) -> dict[str, Any]:
        data = sealed.data
        info = media.hpke_info(DEVICE, session, seq)
        return {
            "name": name,
            "suite": suite.value,
            "device": DEVICE,
            "session": session.hex(),
            "seq": seq,
            "recipient_private_key": seed(self.keys.encryption_text).hex(),
            "recipient_public_key": self.keys.encryption.public_key.hex(),
            "info": info.hex(),
            "info_diag": diag_of(info),
            "aad": "",
            "header": data[: media.HEADER.size].hex(),
            "enc": data[media.HEADER.size : media.HEADER.size + media.ENC_LEN].hex(),
            "ciphertext": data[media.HEADER.size + media.ENC_LEN :].hex(),
            "file": data.hex(),
            "file_sha256": sealed.hash.hex(),
            "file_len": len(data),
            "salt": salt.hex(),
            "media": plain.hex(),
            "media_text": plain.decode(),
            "plaintext": (salt + plain).hex(),
            "commitment": sealed.commitment.hex(),
        }

    # ------------------------------------------------------------------ records
    def add(
        self,
        kind: RecordKind,
        session: int,
        t0: int,
        duration: int = 0,
        body: Mapping[str, Any] | None = None,
        content_type: str | None = None,
        bound: bool = False,
    ) -> SignedRecord:
        seq = len(self.records)
        boot = self.keys.boot_id[session]
        sid = self.keys.session_id[session]
        # monotonic clocks start at 5 s (boot 1) and 3 s (boot 2) when the wall clock says
        # T0 and T0 + 10 s
        m0 = t0 - T0 + 5_000_000 if session == 1 else t0 - T0 - 10_000_000 + 3_000_000
        ref = None
        if content_type is not None:
            what = "segment" if kind is RecordKind.SEGMENT else "photo"
            plain = media_bytes(seq, what)
            salt = sha256(f"unbroken test salt seq {seq}".encode())
            name = f"{what}-seq-{seq}"
            sealed = self.seal(name, plain, salt, Suite.CHACHA, sid, seq)
            self.media[seq] = (name, sealed, salt, plain)
            self.media_vectors.append(
                self.media_vector(name, sealed, Suite.CHACHA, sid, seq, salt, plain)
            )
            ref = MediaRef(sealed.hash, len(sealed.data), sealed.commitment, content_type)
        record = Record(
            suite=Suite.CHACHA,
            device=DEVICE,
            session=sid,
            boot=boot,
            seq=seq,
            prev=self.records[-1].digest if self.records else ZERO_HASH,
            kind=kind,
            t0=t0,
            t1=t0 + duration,
            m0=m0,
            m1=m0 + duration,
            clock=CLOCK,
            body=dict(body or {}),
            officer=OFFICER,
            incident=INCIDENT if bound else None,
            case=CASE if bound else None,
            media=ref,
            anchor=self.anchor,
        )
        signed = SignedRecord.create(record, self.keys[f"session_{session}"])
        self.records.append(signed)
        self.sessions.append(session)
        return signed

    def sync(self, time: int) -> bytes:
        """The server logs every record so far and signs a checkpoint."""
        for signed in self.records[self.tree.size :]:
            self.tree.append(signed.digest)
        cp = Checkpoint(LOG_NAME, self.tree.size, self.tree.root(), time)
        data = cp.sign(self.keys["server"])
        self.checkpoints.append(data)
        return data

    def _write(self) -> None:
        k = RecordKind
        self.add(k.SESSION_OPEN, 1, T0, body={"cert": self.session_cert[1], "reason": "duty"})
        self.add(
            k.SELF_CHECK,
            1,
            T0 + 100_000,
            body={
                "passed": True,
                "items": {
                    "camera": {"passed": True, "detail": "30 frames in 1 s"},
                    "battery": {"passed": True, "detail": "87 %"},
                    "storage": {"passed": True, "detail": "12 GB free"},
                    "clock": {"passed": True, "detail": "offset 1.2 ms"},
                },
            },
        )
        self.add(
            k.SEGMENT, 1, T0 + 200_000, 2_000_000, {"frames": 60, "preroll": True}, "video/mp2t"
        )
        self.add(k.SEGMENT, 1, T0 + 2_200_000, 2_000_000, {"frames": 60}, "video/mp2t")
        cp4, _ = Checkpoint.parse(self.sync(T0 + 5_000_000))
        self.anchor = Anchor(cp4.size, cp4.root)
        # Power is lost while record 4 of boot 1 is being appended: its journal ends torn.
        self.journal_0 = b"".join(cbor.bstr_item(r.encoded) for r in self.records)
        torn_name = f"{layout.journal_file(0)}@{len(self.journal_0)}"
        last = self.records[-1]
        t = T0 + 10_000_000
        self.add(
            k.SESSION_OPEN,
            2,
            t,
            body={
                "cert": self.session_cert[2],
                "reason": "boot",
                "prev_session": self.keys.session_id[1],
            },
        )
        self.add(
            k.RECOVERY,
            2,
            t + 50_000,
            body={
                "last_seq": last.record.seq,
                "last_hash": last.digest,
                "prev_boot": last.record.boot,
                "prev_session": last.record.session,
                "torn": [
                    {
                        "name": torn_name,
                        "len": len(self.torn_bytes),
                        "hash": sha256(self.torn_bytes),
                    }
                ],
                "last_end": last.record.t1,
            },
        )
        self.add(k.INCIDENT_OPEN, 2, t + 100_000, body={"label": "traffic stop"}, bound=True)
        self.add(
            k.SEGMENT,
            2,
            t + 200_000,
            2_000_000,
            {"frames": 60, "keyframe": True},
            "video/mp2t",
            bound=True,
        )
        self.add(k.BOOKMARK, 2, t + 2_300_000, body={"label": "licence shown"}, bound=True)
        self.add(
            k.PHOTO,
            2,
            t + 2_400_000,
            body={"label": "number plate"},
            content_type="image/jpeg",
            bound=True,
        )
        self.add(
            k.NOTICE,
            2,
            t + 2_500_000,
            body={"reason": "incident_open", "pattern": "notice", "prompt": "recording"},
            bound=True,
        )
        self.add(
            k.CLOCK_FAULT,
            2,
            t + 2_600_000,
            body={"offset": 2_500_000, "threshold": 2_000_000},
            bound=True,
        )
        self.add(
            k.STORAGE_FULL,
            2,
            t + 2_700_000,
            body={"free": 4_000_000, "total": 32 << 30},
            bound=True,
        )
        self.add(
            k.STORAGE_RESUMED,
            2,
            t + 2_800_000,
            body={"free": 900_000_000, "total": 32 << 30},
            bound=True,
        )
        self.add(
            k.DELETION_REFUSED,
            2,
            t + 2_900_000,
            body={"interface": "ctl", "target": "seq 7", "requester": "uid 1000"},
            bound=True,
        )
        self.add(
            k.MEDIA_FAILING,
            2,
            t + 3_000_000,
            body={"detail": "read-back of seq 9 was slow"},
            bound=True,
        )
        self.add(
            k.CUSTODY,
            2,
            t + 3_100_000,
            body={"action": "handover", "officer": "badge-0815"},
            bound=True,
        )
        self.add(
            k.INCIDENT_CLOSE, 2, t + 3_200_000, body={"label": "no further action"}, bound=True
        )
        self.add(k.SESSION_CLOSE, 2, t + 3_300_000, body={"reason": "off_duty", "segments": 3})
        self.journal_1 = b"".join(
            cbor.bstr_item(r.encoded) for r in self.records if r.record.boot == self.keys.boot_id[2]
        )
        self.sync(T0 + 14_000_000)
        # A standalone AES-128-GCM envelope (suite UB1-...-AES128GCM), bound to seq 100.
        plain = media_bytes(100, "segment")
        salt = sha256(b"unbroken test salt seq 100")
        sid = self.keys.session_id[2]
        sealed = self.seal("aesgcm-seq-100", plain, salt, Suite.AESGCM, sid, 100)
        self.media_vectors.append(
            self.media_vector("aesgcm-seq-100", sealed, Suite.AESGCM, sid, 100, salt, plain)
        )

    # ------------------------------------------------------------------ logged views
    @property
    def final(self) -> Checkpoint:
        return Checkpoint.parse(self.checkpoints[-1])[0]

    def consistency(self) -> layout.ConsistencyProof:
        first, second = (Checkpoint.parse(c)[0].size for c in self.checkpoints)
        return layout.ConsistencyProof(first, second, tuple(self.tree.consistency(first, second)))

    def chain_entries(self) -> list[bytes]:
        size = self.final.size
        return [
            layout.ChainEntry(
                r.encoded, layout.LogProof(i, size, tuple(self.tree.inclusion(i, size)))
            ).encode()
            for i, r in enumerate(self.records)
        ]

    def receipts(self, seq: int) -> dict[str, bytes]:
        final = self.final
        signed = self.records[seq]
        _, sealed, _, _ = self.media[seq]
        record = Receipt(
            ReceiptKind.RECORD,
            DEVICE,
            seq,
            signed.digest,
            final.time,
            index=seq,
            checkpoint=self.checkpoints[-1],
            path=tuple(self.tree.inclusion(seq, final.size)),
        )
        media_receipt = Receipt(
            ReceiptKind.MEDIA,
            DEVICE,
            seq,
            signed.digest,
            final.time + 500_000,
            media_hash=sealed.hash,
            media_len=len(sealed.data),
        )
        server = self.keys["server"]
        return {"record": record.sign(server), "media": media_receipt.sign(server)}

    def manifest(self) -> bytes:
        first, last = self.records[0], self.records[-1]
        chain = ChainRange(
            DEVICE, 0, last.record.seq, first.record.prev, last.digest, len(self.records)
        )
        final = self.final
        manifest = Manifest(
            final.time,
            LOG_NAME,
            "unbroken test vectors",
            f"device {DEVICE}, whole chain",
            (chain,),
            True,
            {path: sha256(data) for path, data in self.listed_files().items()},
        )
        return manifest.sign(self.keys["server"])

    def listed_files(self) -> dict[str, bytes]:
        """The trust and log files of the bundle, whose hashes the manifest lists."""
        seq_items = cbor.bstr_item
        return {
            layout.ROOT_FILE: self.root,
            layout.CERTS_FILE: b"".join(seq_items(c) for c in self.certs),
            layout.REVOCATIONS_FILE: self.revocations,
            layout.CHECKPOINTS_FILE: b"".join(seq_items(c) for c in self.checkpoints),
            layout.CONSISTENCY_FILE: seq_items(self.consistency().encode()),
        }

    def bundle_files(self) -> dict[str, bytes]:
        seq_items = cbor.bstr_item
        files = {
            "README.txt": README.encode(),
            layout.MANIFEST_FILE: self.manifest(),
            **self.listed_files(),
            layout.chain_file(DEVICE): b"".join(seq_items(e) for e in self.chain_entries()),
        }
        for seq, (_, sealed, salt, plain) in sorted(self.media.items()):
            files[layout.bundle_media(DEVICE, seq)] = sealed.data
            files[layout.bundle_opening(DEVICE, seq)] = salt + plain
        return dict(sorted(files.items()))

    def store_files(self) -> dict[str, bytes]:
        seq_items = cbor.bstr_item
        files = {
            layout.ROOT_FILE: self.root,
            layout.CERTS_FILE: b"".join(seq_items(c) for c in self.certs),
            layout.journal_file(0): self.journal_0 + self.torn_bytes,
            layout.journal_file(1): self.journal_1,
            layout.CHECKPOINTS_FILE: b"".join(seq_items(c) for c in self.checkpoints),
        }
        for seq, (_, sealed, _, _) in sorted(self.media.items()):
            files[layout.store_media(seq)] = sealed.data
        for kind, data in self.receipts(7).items():
            files[layout.receipt_file(7, kind)] = data
        return dict(sorted(files.items()))


# --------------------------------------------------------------------------- files


def verify_summary(files: Mapping[str, bytes], pin: str) -> dict[str, Any]:
    """What ``verify --json`` says about these files (pinned), without the temporary path."""
    from protocol.verify import verify_path  # noqa: PLC0415 - the verifier is only needed here

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "input"
        for name, data in files.items():
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        report = verify_path(root, pin).to_json()
    report["source"]["path"] = "<the files above>"
    return report


def build(reuse: Mapping[str, bytes] | None = None) -> Vectors:
    """Every vector file's content; ``reuse`` maps media names to committed envelopes."""
    keys = Keys()
    story = Story(keys, reuse or {})
    pin = keys["root"].fingerprint
    records = []
    for signed, session in zip(story.records, story.sessions, strict=True):
        rec = signed.record
        records.append(
            {
                "seq": rec.seq,
                "kind": rec.kind.value,
                "signer": f"session_{session}",
                "prev": rec.prev.hex(),
                "payload": signed.envelope.payload.hex(),
                "payload_diag": diag_of(signed.envelope.payload),
                "envelope": signed.encoded.hex(),
                "digest": signed.digest.hex(),
                "media": story.media[rec.seq][0] if rec.seq in story.media else None,
            }
        )
    return {
        "keys.json": keys.vectors(),
        "cbor.json": cbor_vectors(),
        "cose.json": cose_vectors(keys, story.root),
        "certs.json": certs_vectors(story),
        "media.json": {"warning": WARNING, "envelopes": story.media_vectors},
        "records.json": {"device": DEVICE, "records": records},
        "log.json": log_vectors(),
        "checkpoint.json": checkpoint_vectors(story),
        "journal.json": journal_vectors(story),
        "events.json": event_vectors(keys),
        "api.json": api_vectors(keys),
        "bundle.json": {
            "pin": pin,
            "files": {n: d.hex() for n, d in story.bundle_files().items()},
            "chain_entries": [e.hex() for e in story.chain_entries()],
            "verify": verify_summary(story.bundle_files(), pin),
        },
        "store.json": {
            "pin": pin,
            "files": {n: d.hex() for n, d in story.store_files().items()},
            "verify": verify_summary(story.store_files(), pin),
        },
    }


def certs_vectors(story: Story) -> dict[str, Any]:
    """Root, certificates, session certificates, revocations."""
    return {
        "root": {**signed_vector(story.root), "fingerprint": story.keys["root"].fingerprint},
        "device": signed_vector(story.device_cert),
        "server": signed_vector(story.server_cert),
        "encryption": signed_vector(story.encryption_cert),
        "session_1": signed_vector(story.session_cert[1]),
        "session_2": signed_vector(story.session_cert[2]),
        "revocations": signed_vector(story.revocations),
        "certs_cborseq": b"".join(cbor.bstr_item(c) for c in story.certs).hex(),
    }


def log_vectors(n: int = 10) -> dict[str, Any]:
    """RFC 9162 roots, inclusion and consistency proofs over ``n`` fixed entries."""
    entries = [sha256(f"unbroken test leaf {i}".encode()) for i in range(n)]
    tree = log.MemoryTree()
    for e in entries:
        tree.append(e)
    return {
        "entries": [e.hex() for e in entries],
        "leaf_hashes": [log.leaf_hash(e).hex() for e in entries],
        "roots": [{"size": s, "root": tree.root(s).hex()} for s in range(n + 1)],
        "inclusion": [
            {"index": i, "size": s, "path": [p.hex() for p in tree.inclusion(i, s)]}
            for s in range(1, n + 1)
            for i in range(s)
        ],
        "consistency": [
            {"first": a, "second": b, "path": [p.hex() for p in tree.consistency(a, b)]}
            for b in range(1, n + 1)
            for a in range(1, b + 1)
        ],
    }


def checkpoint_vectors(story: Story) -> dict[str, Any]:
    """The two checkpoints of the story's log, their consistency proof, two receipts."""
    proof = story.consistency()
    receipts = story.receipts(7)
    return {
        "log": LOG_NAME,
        "server_kid": story.keys["server"].kid.hex(),
        "checkpoints": [
            {
                "size": cp.size,
                "root": cp.root.hex(),
                "time": cp.time,
                **signed_vector(data),
            }
            for data in story.checkpoints
            for cp in [Checkpoint.parse(data)[0]]
        ],
        "consistency": {
            "first": proof.first,
            "second": proof.second,
            "path": [p.hex() for p in proof.path],
            "encoded": proof.encode().hex(),
        },
        "record_receipt": {"seq": 7, **signed_vector(receipts["record"])},
        "media_receipt": {"seq": 7, **signed_vector(receipts["media"])},
    }


def journal_vectors(story: Story) -> dict[str, Any]:
    """Boot 1's journal: four whole records, then a torn append."""
    data = story.journal_0 + story.torn_bytes
    scan = JournalScan(io.BytesIO(data), layout.journal_file(0))
    items = [{"offset": off, "length": len(item)} for off, item in scan.entries()]
    torn = scan.torn
    assert torn is not None
    return {
        "name": layout.journal_file(0),
        "file": data.hex(),
        "items": items,
        "torn": {
            "name": torn.name,
            "offset": torn.offset,
            "len": torn.length,
            "hash": torn.hash.hex(),
        },
    }


def event_vectors(keys: Keys) -> dict[str, Any]:
    """Signed MQTT payloads (device key) and the topics they go to."""
    signer = keys["device"]
    boot = keys.boot_id[2]
    events = [
        Event(DEVICE, boot, 0, EventKind.STATUS, T0 + 10_000_000, {"state": "online"}),
        Event(DEVICE, boot, 1, EventKind.RECORDING_STARTED, T0 + 10_200_000, {"seq": 7}),
        Event(
            DEVICE,
            boot,
            2,
            EventKind.TELEMETRY,
            T0 + 12_000_000,
            {
                "battery_permille": 870,
                "charging": False,
                "storage_free": 12 << 30,
                "clock_offset_us": 1200,
                "clock_synced": True,
                "recording": True,
            },
        ),
    ]
    channel = {
        EventKind.STATUS: topics.Channel.STATUS,
        EventKind.TELEMETRY: topics.Channel.TELEMETRY,
    }
    return {
        "signer": "device",
        "events": [
            {
                "kind": e.kind.value,
                "topic": topics.topic(DEVICE, channel.get(e.kind, topics.Channel.EVENTS)),
                **signed_vector(e.sign(signer)),
            }
            for e in events
        ],
        "subscriptions": {
            "events": topics.subscription(topics.Channel.EVENTS),
            "telemetry_shared": topics.subscription(
                topics.Channel.TELEMETRY, shared_group="server"
            ),
        },
    }


def api_vectors(keys: Keys) -> dict[str, Any]:
    """The enrolment proof a device signs, and base64url without padding."""
    signer = keys["device"]
    token = "test-enrolment-token"  # noqa: S105 - a published test token, not a secret
    message = api.enrol_message(token, DEVICE, signer.public_key)
    proof = signer.sign(message)
    request = api.EnrolRequest(
        device=DEVICE, token=token, public_key=api.b64e(signer.public_key), proof=api.b64e(proof)
    )
    return {
        "enrol": {
            "token": token,
            "device": DEVICE,
            "public_key": signer.public_key.hex(),
            "message": message.hex(),
            "proof": proof.hex(),
            "request_json": request.model_dump(mode="json"),
        },
        "b64": [
            {"hex": d.hex(), "b64url": api.b64e(d)}
            for d in (b"", b"\xfb", b"\xfb\xff", b"\xfb\xff\xfe")
        ],
        "b64_standard_check": base64.b64encode(b"\xfb\xff").decode(),
    }


def load_reuse(directory: Path = HERE) -> dict[str, bytes]:
    """The media envelopes already committed in ``media.json`` (empty if none)."""
    path = directory / "media.json"
    if not path.exists():
        return {}
    data = json.loads(path.read_text())
    return {e["name"]: bytes.fromhex(e["file"]) for e in data.get("envelopes", [])}


def render(content: Mapping[str, Any]) -> str:
    """The JSON text of a vector file."""
    return json.dumps(content, indent=1, ensure_ascii=False) + "\n"


def write(directory: Path, vectors: Vectors) -> None:
    """Write every vector file."""
    for name, content in vectors.items():
        (directory / name).write_text(render(content))


def main(argv: list[str] | None = None, out: Callable[[str], object] | None = None) -> None:
    """Rewrite the vectors next to this module."""
    parser = argparse.ArgumentParser(prog="python -m protocol.vectors.generate")
    parser.add_argument("--fresh", action="store_true", help="seal every media envelope anew")
    parser.add_argument("--out", type=Path, default=HERE, help="directory to write")
    args = parser.parse_args(argv)
    vectors = build({} if args.fresh else load_reuse(args.out))
    write(args.out, vectors)
    if out is not None:
        out(f"wrote {len(vectors)} files to {args.out}")


if __name__ == "__main__":
    main()
