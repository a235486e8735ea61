"""Signed checkpoints and receipts."""

from __future__ import annotations

from typing import Any

import pytest

from protocol import cose
from protocol.certs import Certificate, KeyKind, RootKey, TrustStore
from protocol.checkpoint import Checkpoint, Receipt, ReceiptKind
from protocol.errors import CertificateError, DecodeError, ProofError, SignatureError, VersionError
from protocol.hashing import sha256
from protocol.keys import SoftwareSigner
from protocol.log import MemoryTree

T = 1_790_000_000_000_000
ROOT = SoftwareSigner.from_seed(sha256(b"unbroken checkpoint test root"))
SERVER = SoftwareSigner.from_seed(sha256(b"unbroken checkpoint test server"))
DEVICE = SoftwareSigner.from_seed(sha256(b"unbroken checkpoint test device"))
OTHER = SoftwareSigner.from_seed(sha256(b"unbroken checkpoint test other"))
ENTRIES = [sha256(f"record {i}".encode()) for i in range(11)]


@pytest.fixture(scope="module")
def trust() -> TrustStore:
    """A root with one server and one device certificate."""
    store = TrustStore(RootKey.load(RootKey.issue(ROOT, "fleet", T)))
    store.add(Certificate.issue(ROOT, KeyKind.SERVER, "server", SERVER.public_key, T))
    store.add(Certificate.issue(ROOT, KeyKind.DEVICE, "cam-001", DEVICE.public_key, T))
    return store


@pytest.fixture(scope="module")
def tree() -> MemoryTree:
    """A log of 11 entries."""
    t = MemoryTree()
    for e in ENTRIES:
        t.append(e)
    return t


def _checkpoint(tree: MemoryTree, signer: SoftwareSigner = SERVER) -> bytes:
    return Checkpoint("log-1", tree.size, tree.root(), T).sign(signer)


def _record_receipt(tree: MemoryTree, seq: int = 7, **changes: Any) -> Receipt:
    fields: dict[str, Any] = {
        "kind": ReceiptKind.RECORD,
        "device": "cam-001",
        "seq": seq,
        "record": ENTRIES[seq],
        "time": T + 1,
        "index": seq,
        "checkpoint": _checkpoint(tree),
        "path": tuple(tree.inclusion(seq)),
    }
    fields.update(changes)
    return Receipt(**fields)


def test_checkpoint_round_trip(trust: TrustStore, tree: MemoryTree) -> None:
    data = _checkpoint(tree)
    cp, msg = Checkpoint.parse(data)
    assert (cp.log, cp.size, cp.root, cp.time) == ("log-1", 11, tree.root(), T)
    assert cp.encoded == data
    assert cp.signer == SERVER.kid == msg.kid
    assert msg.content_type is cose.ContentType.CHECKPOINT
    assert msg.body("cp") == {"v": 1, "log": "log-1", "size": 11, "root": tree.root(), "time": T}
    assert Checkpoint.load(data, trust) == cp


def test_checkpoint_signers(trust: TrustStore, tree: MemoryTree) -> None:
    with pytest.raises(CertificateError, match="not certified"):
        Checkpoint.load(_checkpoint(tree, OTHER), trust)
    with pytest.raises(CertificateError, match="device key"):
        Checkpoint.load(_checkpoint(tree, DEVICE), trust)


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"v": 2}, VersionError),
        ({"size": -1}, DecodeError),
        ({"root": b"\x00" * 31}, DecodeError),
        ({"time": 1.5}, DecodeError),
        ({"log": "l" * 201}, DecodeError),
        ({"signer": b"k"}, DecodeError),
    ],
)
def test_checkpoint_rules(change: dict[str, Any], error: type[Exception]) -> None:
    body = {**Checkpoint("log-1", 1, bytes(32), T).to_cbor(), **change}
    with pytest.raises(error):
        Checkpoint.parse(cose.sign_object(SERVER, cose.ContentType.CHECKPOINT, body))


def test_record_receipt(trust: TrustStore, tree: MemoryTree) -> None:
    receipt = _record_receipt(tree)
    data = receipt.sign(SERVER)
    parsed, msg = Receipt.parse(data)
    assert parsed == receipt
    assert parsed.encoded == data
    assert set(msg.body("r")) == {
        "v",
        "kind",
        "device",
        "seq",
        "record",
        "time",
        "index",
        "checkpoint",
        "path",
    }
    assert Receipt.load(data, trust) == receipt


def test_media_receipt(trust: TrustStore) -> None:
    receipt = Receipt(
        ReceiptKind.MEDIA, "cam-001", 3, ENTRIES[3], T, media_hash=sha256(b"m"), media_len=99
    )
    data = receipt.sign(SERVER)
    assert Receipt.load(data, trust) == receipt
    assert set(cose.decode(data).body("r")) == {
        "v",
        "kind",
        "device",
        "seq",
        "record",
        "time",
        "hash",
        "len",
    }


def test_receipt_proof_must_hold(trust: TrustStore, tree: MemoryTree) -> None:
    wrong_path = _record_receipt(tree, path=tuple(tree.inclusion(6)))
    with pytest.raises(ProofError):
        Receipt.load(wrong_path.sign(SERVER), trust)
    wrong_record = _record_receipt(tree, record=ENTRIES[6])
    with pytest.raises(ProofError):
        Receipt.load(wrong_record.sign(SERVER), trust)


def test_receipt_checkpoint_must_be_server_signed(trust: TrustStore, tree: MemoryTree) -> None:
    receipt = _record_receipt(tree, checkpoint=_checkpoint(tree, OTHER))
    with pytest.raises(CertificateError):
        Receipt.load(receipt.sign(SERVER), trust)
    with pytest.raises(CertificateError):
        Receipt.load(_record_receipt(tree).sign(OTHER), trust)
    with pytest.raises(DecodeError):
        Receipt.load(_record_receipt(tree, checkpoint=b"junk").sign(SERVER), trust)


def test_receipt_signature(trust: TrustStore, tree: MemoryTree) -> None:
    data = bytearray(_record_receipt(tree).sign(SERVER))
    data[-1] ^= 1
    with pytest.raises(SignatureError):
        Receipt.load(bytes(data), trust)


def _receipt_body(kind: str | None = "record", **change: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "v": 1,
        "kind": kind,
        "device": "cam-001",
        "seq": 1,
        "record": bytes(32),
        "time": T,
    }
    if kind == "record":
        base.update(index=1, checkpoint=b"cp", path=[bytes(32)])
    else:
        base.update(hash=bytes(32), len=5)
    base.update(change)
    return {k: v for k, v in base.items() if v is not None}


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (_receipt_body(kind="both"), DecodeError),
        (_receipt_body(kind=None), DecodeError),
        (_receipt_body(v=3), VersionError),
        (_receipt_body(device="CAM"), DecodeError),
        (_receipt_body(seq=-1), DecodeError),
        (_receipt_body(record=bytes(16)), DecodeError),
        (_receipt_body(path=[bytes(31)]), DecodeError),
        (_receipt_body(path=[bytes(32)] * 65), DecodeError),
        (_receipt_body(path=bytes(32)), DecodeError),
        (_receipt_body(checkpoint=b"x" * 4097), DecodeError),
        (_receipt_body(index=None), DecodeError),
        (_receipt_body(hash=bytes(32)), DecodeError),
        (_receipt_body("media", index=1), DecodeError),
        (_receipt_body("media", len=None), DecodeError),
        (_receipt_body("media", hash=bytes(33)), DecodeError),
    ],
)
def test_receipt_rules(body: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        Receipt.parse(cose.sign_object(SERVER, cose.ContentType.RECEIPT, body))


def test_receipt_payload_must_be_a_map() -> None:
    with pytest.raises(DecodeError):
        Receipt.parse(cose.sign_object(SERVER, cose.ContentType.RECEIPT, ["record"]))
