"""Hypothesis fuzzing: every parser, fed random bytes, mutated valid encodings and validly
signed payloads with mutated fields, raises only protocol errors (no crash, no hang); the
verifier, fed junk folders and damaged zips, returns a report or says the input is unreadable."""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import cbor, cose, layout
from protocol.bundle import zip_bundle
from protocol.certs import (
    Certificate,
    KeyKind,
    Revocation,
    RootKey,
    TrustStore,
    issue_revocations,
    parse_revocations,
)
from protocol.checkpoint import Checkpoint, Receipt, ReceiptKind
from protocol.container import open_container
from protocol.errors import DecodeError, ProtocolError
from protocol.events import Event, EventKind
from protocol.hashing import sha256
from protocol.journal import JournalScan
from protocol.keys import SoftwareSigner
from protocol.layout import ChainEntry, ConsistencyProof, LogProof
from protocol.log import MemoryTree
from protocol.manifest import ChainRange, Manifest
from protocol.record import (
    Anchor,
    ClockState,
    MediaRef,
    Record,
    RecordKind,
    SignedRecord,
    Suite,
)
from protocol.verify import Report, UnreadableInputError, verify_path
from tests.factory import Fleet

T = 1_790_000_000_000_000
ROOT_KEY = SoftwareSigner.from_seed(sha256(b"unbroken fuzz test root"))
SERVER = SoftwareSigner.from_seed(sha256(b"unbroken fuzz test server"))
DEVICE = SoftwareSigner.from_seed(sha256(b"unbroken fuzz test device"))
H = sha256(b"h")

ROOT_COSE = RootKey.issue(ROOT_KEY, "fuzz fleet", T)
ROOT = RootKey.load(ROOT_COSE)
TRUST = TrustStore(ROOT)
SERVER_CERT = TRUST.add(Certificate.issue(ROOT_KEY, KeyKind.SERVER, "server", SERVER.public_key, T))
DEVICE_CERT = TRUST.add(
    Certificate.issue(ROOT_KEY, KeyKind.DEVICE, "cam-001", DEVICE.public_key, T)
)
TREE = MemoryTree()
for _i in range(5):
    TREE.append(sha256(b"%d" % _i))
CHECKPOINT = Checkpoint("log", TREE.size, TREE.root(), T).sign(SERVER)
RECORD = Record(
    Suite.CHACHA,
    "cam-001",
    bytes(16),
    bytes(16),
    3,
    H,
    RecordKind.SEGMENT,
    T,
    T + 1,
    1,
    2,
    ClockState("ntp", -4, True),
    {"frames": 3},
    officer="o",
    media=MediaRef(H, 10, H, "video/mp2t"),
    anchor=Anchor(5, TREE.root()),
).sign(DEVICE)

#: Valid encodings, with the signer and content type to re-sign mutated payloads.
VALID: dict[str, tuple[bytes, SoftwareSigner]] = {
    "root": (ROOT_COSE, ROOT_KEY),
    "certificate": (DEVICE_CERT.encoded, ROOT_KEY),
    "session_certificate": (
        Certificate.issue(DEVICE, KeyKind.SESSION, "cam-001", H, T, session=bytes(16)),
        DEVICE,
    ),
    "revocations": (
        issue_revocations(ROOT_KEY, T, [Revocation("cam-001", H, T, 4, "lost")]),
        ROOT_KEY,
    ),
    "record": (RECORD, DEVICE),
    "checkpoint": (CHECKPOINT, SERVER),
    "record_receipt": (
        Receipt(
            ReceiptKind.RECORD,
            "cam-001",
            2,
            sha256(b"2"),
            T,
            index=2,
            checkpoint=CHECKPOINT,
            path=tuple(TREE.inclusion(2)),
        ).sign(SERVER),
        SERVER,
    ),
    "media_receipt": (
        Receipt(ReceiptKind.MEDIA, "cam-001", 2, H, T, media_hash=H, media_len=9).sign(SERVER),
        SERVER,
    ),
    "manifest": (
        Manifest(T, "log", "x", "y", (ChainRange("cam-001", 0, 4, bytes(32), H, 5),), True).sign(
            SERVER
        ),
        SERVER,
    ),
    "event": (
        Event("cam-001", bytes(16), 1, EventKind.TELEMETRY, T, {"battery_mv": 3}).sign(DEVICE),
        DEVICE,
    ),
}
PLAIN: dict[str, bytes] = {
    "chain_entry": ChainEntry(RECORD, LogProof(3, 5, tuple(TREE.inclusion(3)))).encode(),
    "consistency": ConsistencyProof(2, 5, tuple(TREE.consistency(2, 5))).encode(),
}

PARSERS: dict[str, Callable[[bytes], object]] = {
    "cose": cose.decode,
    "root": RootKey.load,
    "certificate": Certificate.parse,
    "session_certificate": lambda b: TRUST.session_certificate(b, "cam-001"),
    "trust_add": lambda b: TrustStore(ROOT).add(b),
    "revocations": lambda b: parse_revocations(b, ROOT),
    "record": SignedRecord.parse,
    "checkpoint": lambda b: Checkpoint.load(b, TRUST),
    "record_receipt": lambda b: Receipt.load(b, TRUST),
    "media_receipt": Receipt.parse,
    "manifest": Manifest.parse,
    "event": Event.parse,
    "chain_entry": ChainEntry.decode,
    "consistency": ConsistencyProof.decode,
    "sequence": lambda b: list(cbor.iter_bstr_sequence(b)),
    "journal": lambda b: list(JournalScan(io.BytesIO(b), "j").items()),
}

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _parse(name: str, data: bytes) -> None:
    with contextlib.suppress(ProtocolError):  # anything else fails the test
        PARSERS[name](data)


def _mutate(data: bytes, draw: st.DataObject) -> bytes:
    out = bytearray(data)
    for _ in range(draw.draw(st.integers(1, 4), label="mutations")):
        op = draw.draw(st.sampled_from(["flip", "set", "insert", "delete", "cut", "dup"]))
        pos = draw.draw(st.integers(0, max(len(out) - 1, 0)))
        if not out:
            out.append(draw.draw(st.integers(0, 255)))
        elif op == "flip":
            out[pos] ^= 1 << draw.draw(st.integers(0, 7))
        elif op == "set":
            out[pos] = draw.draw(st.integers(0, 255))
        elif op == "insert":
            out[pos:pos] = draw.draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del out[pos : pos + draw.draw(st.integers(1, 8))]
        elif op == "cut":
            del out[pos:]
        else:
            out[pos:pos] = out[pos : pos + draw.draw(st.integers(1, 16))]
    return bytes(out)


# ----------------------------------------------------------------- parsers
@pytest.mark.parametrize("name", list(PARSERS))
@FUZZ
@given(data=st.binary(max_size=300))
def test_random_bytes(name: str, data: bytes) -> None:
    _parse(name, data)
    _parse(name, b"\xd2\x84" + data)


@pytest.mark.parametrize("name", [*VALID, *PLAIN])
@FUZZ
@given(draw=st.data())
def test_mutated_valid_encodings(name: str, draw: st.DataObject) -> None:
    data = VALID[name][0] if name in VALID else PLAIN[name]
    mutated = _mutate(data, draw)
    for parser in (name, "cose", "sequence", "journal") if name in VALID else (name,):
        _parse(parser, mutated)
        _parse(parser, cbor.bstr_item(mutated))


_leaf = (
    st.integers(-(1 << 64), (1 << 64) - 1)
    | st.sampled_from([0, 1, -1, 1 << 63, (1 << 63) - 1])
    | st.text(max_size=12)
    | st.sampled_from(["", "v", "kind", "record", "media", "segment", "ntp", "cam-001"])
    | st.binary(max_size=40)
    | st.sampled_from([bytes(16), bytes(32), bytes(64)])
    | st.booleans()
    | st.none()
    | st.floats(allow_nan=False)
)
_value = st.recursive(
    _leaf,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)


def _mutate_value(value: Any, draw: st.DataObject, depth: int = 0) -> Any:
    if isinstance(value, dict) and value and depth < 3:
        value = dict(value)
        key = draw.draw(st.sampled_from(sorted(value, key=repr)))
        op = draw.draw(st.sampled_from(["replace", "recurse", "delete", "add"]))
        if op == "replace":
            value[key] = draw.draw(_value)
        elif op == "recurse":
            value[key] = _mutate_value(value[key], draw, depth + 1)
        elif op == "delete":
            del value[key]
        else:
            value[draw.draw(st.text(max_size=8))] = draw.draw(_value)
        return value
    if isinstance(value, list) and value and depth < 3:
        value = list(value)
        i = draw.draw(st.integers(0, len(value) - 1))
        value[i] = _mutate_value(value[i], draw, depth + 1)
        return value
    return draw.draw(_value)


@pytest.mark.parametrize("name", list(VALID))
@FUZZ
@given(draw=st.data())
def test_signed_payloads_with_mutated_fields(name: str, draw: st.DataObject) -> None:
    data, signer = VALID[name]
    msg = cose.decode(data)
    payload = cbor2.loads(msg.payload)  # plain dicts and lists, to be changed
    for _ in range(draw.draw(st.integers(1, 3))):
        payload = _mutate_value(payload, draw)
    try:
        resigned = cose.sign_object(signer, msg.content_type, payload)
    except DecodeError:
        return  # not encodable (e.g. a float NaN): nothing to parse
    _parse(name, resigned)


# ----------------------------------------------------------------- containers
@FUZZ
@given(data=st.binary(max_size=400), with_eocd=st.booleans())
def test_open_container_on_junk_files(data: bytes, with_eocd: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "junk.zip"
        # An end-of-central-directory record makes zipfile take the junk for an archive.
        path.write_bytes(data + (b"PK\x05\x06" + bytes(18) if with_eocd else b""))
        try:
            container = open_container(path)
        except DecodeError:
            return
        try:
            for name in container.files():
                with contextlib.suppress(DecodeError):
                    container.read(name, 1 << 20)
        finally:
            container.close()


# ----------------------------------------------------------------- the verifier on junk
_PATHS = [
    "manifest.cose",
    "trust/root.cose",
    "trust/certs.cborseq",
    "trust/revocations.cose",
    "log/checkpoints.cborseq",
    "log/consistency.cborseq",
    "chains/cam-001.cborseq",
    "chains/other.cborseq",
    "media/cam-001/000000000003.ubm",
    "openings/cam-001/000000000003.bin",
    "journal/00000000.log",
    "journal/00000001.log",
    "journal/junk",
    "media/000000000003.ubm",
    "media/zzz",
    "receipts/000000000003.record.cose",
    "receipts/000000000003.media.cose",
    "torn/b00000001-000000000004.ubm",
    "keys/device.pem",
    "README.txt",
    "other/file",
]
_CONTENT = st.one_of(
    st.binary(max_size=200),
    st.sampled_from([data for data, _ in VALID.values()]),
    st.sampled_from([cbor.bstr_item(data) for data, _ in VALID.values()]),
    st.just(cbor.bstr_item(DEVICE_CERT.encoded) + cbor.bstr_item(SERVER_CERT.encoded)),
    st.just(cbor.bstr_item(RECORD) + cbor.bstr_item(RECORD)),
    st.just(cbor.bstr_item(PLAIN["chain_entry"])),
    st.just(cbor.bstr_item(CHECKPOINT) + cbor.bstr_item(PLAIN["consistency"])),
    st.just(b""),
)
_TREES = st.dictionaries(st.sampled_from(_PATHS), _CONTENT, max_size=8)


def _verify(path: Path) -> Report | None:
    try:
        report = verify_path(path)
    except UnreadableInputError:
        return None
    assert report.verdict in ("authentic", "not_authentic")
    report.to_json()
    return report


def _write_tree(root: Path, files: dict[str, bytes]) -> None:
    for rel, content in files.items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)


@FUZZ
@given(files=_TREES, pin=st.booleans())
def test_verify_on_junk_folders_and_zips(files: dict[str, bytes], pin: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "input"
        folder.mkdir()
        _write_tree(folder, files)
        report = _verify(folder)
        if report is not None and files.get(layout.ROOT_FILE) != ROOT_COSE:
            assert report.verdict == "not_authentic"
        if pin:
            with contextlib.suppress(UnreadableInputError):
                verify_path(folder, ROOT_KEY.fingerprint)
        archive = Path(tmp) / "input.zip"
        with zipfile.ZipFile(archive, "w") as zf:
            for rel, content in files.items():
                zf.writestr(rel, content)
        _verify(archive)


@pytest.fixture(scope="module")
def bundle_zip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A real, authentic export bundle of a short shift, zipped."""
    fleet = Fleet()
    device = fleet.device("cam-001")
    device.open_session()
    for _ in range(3):
        device.segment()
    device.log_all()
    device.segment()
    device.close()
    out = tmp_path_factory.mktemp("fuzz-bundle")
    bundle = fleet.export(out / "bundle")
    assert verify_path(bundle, fleet.fingerprint).verdict == "authentic"
    zip_bundle(bundle, out / "bundle.zip")
    return (out / "bundle.zip").read_bytes()


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(draw=st.data())
def test_verify_on_damaged_zips_of_a_real_bundle(bundle_zip: bytes, draw: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bundle.zip"
        path.write_bytes(_mutate(bundle_zip, draw))
        _verify(path)


# ----------------------------------------------------------------- known verify/ crashes
def _store(root: Path) -> Path:
    _write_tree(
        root,
        {
            layout.ROOT_FILE: ROOT_COSE,
            layout.CERTS_FILE: cbor.bstr_item(DEVICE_CERT.encoded),
            "journal/00000000.log": b"",
        },
    )
    return root


def test_store_with_a_symlinked_journal(tmp_path: Path) -> None:
    store = _store(tmp_path / "store")
    (tmp_path / "elsewhere").write_bytes(b"")
    os.symlink(tmp_path / "elsewhere", store / "journal" / "00000001.log")
    _verify(store)


def test_store_with_a_symlink_in_torn(tmp_path: Path) -> None:
    store = _store(tmp_path / "store")
    (store / "torn").mkdir()
    os.symlink(store / layout.ROOT_FILE, store / "torn" / "x")
    _verify(store)


def test_store_with_a_folder_in_torn(tmp_path: Path) -> None:
    store = _store(tmp_path / "store")
    (store / "torn" / "sub").mkdir(parents=True)
    _verify(store)
