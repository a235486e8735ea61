"""File layouts of bundles and stores, chain entries, consistency proofs, the manifest and the
bundle writer."""

from __future__ import annotations

import contextlib
import zipfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import cbor, cose, layout
from protocol.bundle import BundleExistsError, BundleWriter, zip_bundle
from protocol.errors import DecodeError, ProtocolError, VersionError
from protocol.hashing import sha256
from protocol.keys import SoftwareSigner
from protocol.manifest import MAX_CHAINS, ChainRange, Manifest

SERVER = SoftwareSigner.from_seed(sha256(b"unbroken layout test server"))
H = sha256(b"h")


def test_paths() -> None:
    assert layout.chain_file("cam-001") == "chains/cam-001.cborseq"
    assert layout.bundle_media("cam-001", 7) == "media/cam-001/000000000007.ubm"
    assert layout.bundle_opening("cam-001", 7) == "openings/cam-001/000000000007.bin"
    assert layout.journal_file(3) == "journal/00000003.log"
    assert layout.store_media(12) == "media/000000000012.ubm"
    assert layout.receipt_file(12, "record") == "receipts/000000000012.record.cose"
    assert layout.receipt_file(12, "media") == "receipts/000000000012.media.cose"
    assert (layout.ROOT_FILE, layout.CERTS_FILE, layout.REVOCATIONS_FILE) == (
        "trust/root.cose",
        "trust/certs.cborseq",
        "trust/revocations.cose",
    )
    assert (layout.MANIFEST_FILE, layout.CHECKPOINTS_FILE, layout.CONSISTENCY_FILE) == (
        "manifest.cose",
        "log/checkpoints.cborseq",
        "log/consistency.cborseq",
    )
    assert layout.STORE_PRIVATE_DIRS == ("keys", "state", "outbox", "tmp")


@pytest.mark.parametrize(
    ("name", "seq"),
    [
        ("000000000007.ubm", 7),
        ("999999999999.bin", 999_999_999_999),
        ("000000000007.UBM", None),
        ("00000000007.ubm", None),
        ("0000000000007.ubm", None),
        ("000000000007.ubm\n", None),
        ("000000000007.ubm.tmp", None),
        ("x000000000007.ubm", None),
        ("00000000000a.ubm", None),
        ("000000000007.txt", None),
    ],
)
def test_seq_names(name: str, seq: int | None) -> None:
    assert layout.parse_seq_name(name) == seq


@pytest.mark.parametrize(
    ("name", "boot"),
    [
        ("00000000.log", 0),
        ("00000042.log", 42),
        ("0000042.log", None),
        ("00000042.log\n", None),
        ("00000042.logx", None),
        ("00000042.LOG", None),
    ],
)
def test_journal_names(name: str, boot: int | None) -> None:
    assert layout.parse_journal_name(name) == boot


@pytest.mark.parametrize(
    ("path", "doc"),
    [
        ("README", True),
        ("README.txt", True),
        ("readme.md", True),
        ("README-custodian", True),
        ("notes/case.md", True),
        ("NOTES.TXT", True),
        ("index.html", True),
        ("media/cam-001/README", True),
        ("manifest.cose", False),
        ("chains/cam-001.cborseq", False),
        ("README.txt/evil.cose", False),
        ("media/cam-001/000000000001.ubm", False),
        ("x.md.cose", False),
        ("x.htm", False),
    ],
)
def test_documentation(path: str, doc: bool) -> None:
    assert layout.is_documentation(path) is doc


def test_chain_entry_round_trip() -> None:
    proof = layout.LogProof(5, 9, (H, H))
    entry = layout.ChainEntry(b"record bytes", proof)
    data = entry.encode()
    assert cbor.decode(data) == {
        "record": b"record bytes",
        "log": {"index": 5, "size": 9, "path": [H, H]},
    }
    assert layout.ChainEntry.decode(data) == entry
    bare = layout.ChainEntry(b"r", None)
    assert cbor.decode(bare.encode()) == {"record": b"r"}
    assert layout.ChainEntry.decode(bare.encode()) == bare


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"record": "text"},
        {"record": b"r", "extra": 1},
        {"record": b"r", "log": {"index": 1, "size": 2}},
        {"record": b"r", "log": {"index": -1, "size": 2, "path": []}},
        {"record": b"r", "log": {"index": 1, "size": 2, "path": [b"x"]}},
        {"record": b"r", "log": {"index": 1, "size": 2, "path": [H] * 65}},
        {"record": b"r", "log": {"index": 1, "size": 2, "path": H}},
        {"record": b"r", "log": None},
        [b"r"],
    ],
)
def test_chain_entry_rules(body: Any) -> None:
    with pytest.raises(DecodeError):
        layout.ChainEntry.decode(cbor.encode(body))


def test_consistency_proof_round_trip_and_rules() -> None:
    proof = layout.ConsistencyProof(3, 8, (H,))
    assert cbor.decode(proof.encode()) == {"from": 3, "to": 8, "path": [H]}
    assert layout.ConsistencyProof.decode(proof.encode()) == proof
    for body in (
        {"from": 3, "to": 8},
        {"from": -3, "to": 8, "path": []},
        {"from": 1, "to": 2, "path": [b"s"]},
    ):
        with pytest.raises(DecodeError):
            layout.ConsistencyProof.decode(cbor.encode(body))


# ----------------------------------------------------------------- manifest
def _manifest(**changes: Any) -> Manifest:
    fields: dict[str, Any] = {
        "created": 10,
        "log": "log-1",
        "exporter": "server-1",
        "scope": "case 17",
        "chains": (ChainRange("cam-001", 0, 9, bytes(32), H, 10),),
        "openings": True,
    }
    fields.update(changes)
    return Manifest(**fields)


def test_manifest_round_trip() -> None:
    manifest = _manifest()
    data = manifest.sign(SERVER)
    parsed, msg = Manifest.parse(data)
    assert parsed == manifest
    assert parsed.encoded == data
    assert msg.kid == SERVER.kid
    assert msg.body("m")["kind"] == "export"


def _manifest_body(**changes: Any) -> dict[str, Any]:
    body = _manifest().to_cbor()
    body.update(changes)
    return body


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (_manifest_body(v=2), VersionError),
        (_manifest_body(kind="import"), DecodeError),
        (_manifest_body(chains={}), DecodeError),
        (_manifest_body(openings=1), DecodeError),
        (_manifest_body(scope="s" * 1001), DecodeError),
        (_manifest_body(chains=[{"device": "cam-001"}]), DecodeError),
        (
            _manifest_body(chains=[ChainRange("cam-001", 0, 1, H, H, 2).to_cbor()] * 2),
            DecodeError,
        ),
        (
            _manifest_body(
                chains=[{**ChainRange("cam-001", 0, 1, H, H, 2).to_cbor(), "head": b""}]
            ),
            DecodeError,
        ),
        (_manifest_body(signature=b""), DecodeError),
    ],
)
def test_manifest_rules(body: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        Manifest.parse(cose.sign_object(SERVER, cose.ContentType.MANIFEST, body))


def test_manifest_chain_limit() -> None:
    # More than MAX_CHAINS chains do not fit the 1 MiB object limit anyway: either refuses.
    chains = [ChainRange(f"cam-{i}", 0, 0, H, H, 1).to_cbor() for i in range(MAX_CHAINS + 1)]
    data = cose.sign_object(SERVER, cose.ContentType.MANIFEST, _manifest_body(chains=chains))
    with pytest.raises(DecodeError):
        Manifest.parse(data)


# ----------------------------------------------------------------- bundle writer
def test_bundle_writer(tmp_path: Path) -> None:
    out = tmp_path / "b"
    writer = BundleWriter(out)
    writer.trust(b"root", [b"c1", b"c2"], None)
    writer.log([b"cp1", b"cp2"], [b"proof"])
    writer.begin_chain("cam-001")
    writer.entry(layout.ChainEntry(b"rec0", None))
    writer.entry(layout.ChainEntry(b"rec1", None))
    writer.media("cam-001", 1, b"sealed", b"opened")
    writer.media("cam-001", 2, b"sealed2")
    writer.finish(b"manifest")
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == [
        "README.txt",
        "chains/cam-001.cborseq",
        "log/checkpoints.cborseq",
        "log/consistency.cborseq",
        "manifest.cose",
        "media/cam-001/000000000001.ubm",
        "media/cam-001/000000000002.ubm",
        "openings/cam-001/000000000001.bin",
        "trust/certs.cborseq",
        "trust/root.cose",
    ]
    chain = list(cbor.iter_bstr_sequence((out / "chains/cam-001.cborseq").read_bytes()))
    assert [layout.ChainEntry.decode(c).record for c in chain] == [b"rec0", b"rec1"]
    assert list(cbor.iter_bstr_sequence((out / "trust/certs.cborseq").read_bytes())) == [
        b"c1",
        b"c2",
    ]
    assert layout.is_documentation("README.txt")
    target = tmp_path / "b.zip"
    zip_bundle(out, target)
    with zipfile.ZipFile(target) as zf:
        assert sorted(zf.namelist()) == files
        assert zf.getinfo("media/cam-001/000000000001.ubm").compress_type == zipfile.ZIP_STORED
        assert zf.getinfo("manifest.cose").compress_type == zipfile.ZIP_DEFLATED


def test_bundle_writer_refuses_a_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "x").write_text("x")
    with pytest.raises(BundleExistsError):
        BundleWriter(tmp_path)
    writer = BundleWriter(tmp_path / "new")
    with pytest.raises(ProtocolError):
        writer.entry(layout.ChainEntry(b"r", None))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=100))
def test_entry_decoders_on_junk(data: bytes) -> None:
    for decode in (layout.ChainEntry.decode, layout.ConsistencyProof.decode):
        with contextlib.suppress(DecodeError):  # any other error fails the test
            decode(data)
