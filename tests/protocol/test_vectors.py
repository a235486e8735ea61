"""The committed known-answer vectors decode and verify with the code, and equal what the
generator makes now (byte for byte; HPKE ciphertexts, being randomised, are reused by the
generator only when they decrypt to the expected bytes, which is checked here too)."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from protocol import api, cbor, cose, layout, log, media, topics
from protocol.certs import KeyKind, RootKey, TrustStore, parse_revocations
from protocol.checkpoint import Checkpoint, Receipt, ReceiptKind
from protocol.errors import AlgorithmError, DecodeError, SignatureError
from protocol.events import Event
from protocol.hashing import ZERO_HASH, fingerprint, sha256
from protocol.journal import JournalScan
from protocol.keys import EncryptionKey, SoftwareSigner
from protocol.record import RecordKind, SignedRecord, Suite
from protocol.vectors import generate
from protocol.verify import verify_path

HERE = Path(generate.__file__).parent


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((HERE / name).read_text())
    return data


def h(text: str) -> bytes:
    return bytes.fromhex(text)


def trust() -> TrustStore:
    certs = load("certs.json")
    store = TrustStore(RootKey.load(h(certs["root"]["cose"])))
    for item in cbor.iter_bstr_sequence(h(certs["certs_cborseq"])):
        store.add(item)
    return store


@pytest.fixture(scope="module")
def regenerated() -> generate.Vectors:
    return generate.build(generate.load_reuse(HERE))


@pytest.mark.parametrize("name", generate.FILES)
def test_committed_file_equals_generator_output(name: str, regenerated: generate.Vectors) -> None:
    assert load(name) == regenerated[name], f"{name} is stale: python -m protocol.vectors.generate"
    assert (HERE / name).read_text() == generate.render(regenerated[name])


def test_no_other_json_files() -> None:
    assert sorted(p.name for p in HERE.glob("*.json")) == sorted(generate.FILES)


def test_fresh_generation_differs_only_through_the_ciphertexts() -> None:
    fresh = generate.build({})
    committed = {n: load(n) for n in generate.FILES}
    for name in ("keys.json", "cbor.json", "cose.json", "certs.json", "log.json", "api.json"):
        assert fresh[name] == committed[name], name
    for old, new in zip(
        committed["media.json"]["envelopes"], fresh["media.json"]["envelopes"], strict=True
    ):
        for key in ("info", "salt", "media", "plaintext", "commitment", "header", "file_len"):
            assert old[key] == new[key], (old["name"], key)
        assert old["enc"] != new["enc"]  # a fresh ephemeral key each time


def test_keys_derive_from_their_seed_texts() -> None:
    keys = load("keys.json")
    assert "TEST KEYS" in keys["warning"]
    for k in keys["ed25519"]:
        assert h(k["seed"]) == sha256(k["seed_text"].encode())
        signer = SoftwareSigner.from_seed(h(k["seed"]))
        assert signer.public_key.hex() == k["public_key"]
        assert sha256(signer.public_key).hex() == k["kid"]
        assert fingerprint(signer.public_key) == k["fingerprint"]
    (x,) = keys["x25519"]
    assert EncryptionKey.from_seed(h(x["private_key"])).public_key.hex() == x["public_key"]


# --------------------------------------------------------------------------- cbor, cose


def test_cbor_valid_samples_round_trip() -> None:
    for sample in load("cbor.json")["valid"]:
        data = h(sample["hex"])
        value = cbor.decode(data)
        assert cbor.encode(value) == data, sample["name"]
        assert generate.diag(value) == sample["diag"], sample["name"]


def test_cbor_invalid_samples_are_refused() -> None:
    for sample in load("cbor.json")["invalid"]:
        with pytest.raises(DecodeError):
            cbor.decode(h(sample["hex"]))


def test_cose_sign1_parts() -> None:
    v = load("cose.json")
    msg = cose.decode(h(v["cose_sign1"]), cose.ContentType.ROOT)
    assert msg.protected.hex() == v["protected"]
    assert msg.payload.hex() == v["payload"]
    assert msg.to_be_signed().hex() == v["sig_structure"]
    assert msg.kid.hex() == v["kid"]
    assert msg.digest.hex() == v["digest"] == sha256(h(v["cose_sign1"])).hex()
    # an Ed25519 check that does not go through our code
    Ed25519PublicKey.from_public_bytes(h(v["public_key"])).verify(
        h(v["signature"]), h(v["sig_structure"])
    )
    msg.verify(h(v["public_key"]))
    bad = cose.decode(h(v["bad_signature"]))
    with pytest.raises(SignatureError):
        bad.verify(h(v["public_key"]))


def _bstr(data: bytes) -> bytes:
    """A CBOR byte-string head and content, by hand (RFC 8949 section 3)."""
    n = len(data)
    if n < 24:
        return bytes([0x40 + n]) + data
    for info, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if n < 1 << (8 * size):
            return bytes([0x40 + info]) + n.to_bytes(size, "big") + data
    raise AssertionError


def test_cose_bytes_as_the_spec_spells_them() -> None:
    """SPEC.md section 5, byte by byte, without the CBOR library."""
    v = load("cose.json")
    ct, kid = v["content_type"].encode(), h(v["kid"])
    protected = b"\xa3\x01\x27\x03\x78" + bytes([len(ct)]) + ct + b"\x04\x58\x20" + kid
    assert protected.hex() == v["protected"]
    payload = h(v["payload"])
    tbs = b"\x84\x6a" + b"Signature1" + _bstr(protected) + b"\x40" + _bstr(payload)
    assert tbs.hex() == v["sig_structure"]
    envelope = b"\xd2\x84" + _bstr(protected) + b"\xa0" + _bstr(payload) + _bstr(h(v["signature"]))
    assert envelope.hex() == v["cose_sign1"]


def test_cose_invalid_envelopes() -> None:
    errors = {"AlgorithmError": AlgorithmError, "DecodeError": DecodeError}
    for sample in load("cose.json")["invalid"]:
        with pytest.raises(errors[sample["error"]]):
            cose.decode(h(sample["hex"]))


# --------------------------------------------------------------------------- trust


def test_certificates_chain_to_the_root() -> None:
    v = load("certs.json")
    store = trust()
    assert store.root.fingerprint == v["root"]["fingerprint"]
    kinds = {c.kind for c in store.certificates()}
    assert kinds == {KeyKind.DEVICE, KeyKind.SERVER, KeyKind.ENCRYPTION}
    for n in (1, 2):
        cert, issuer = store.session_certificate(h(v[f"session_{n}"]["cose"]), "cam-001")
        assert cert.kind is KeyKind.SESSION
        assert issuer.kind is KeyKind.DEVICE
    (revoked,) = parse_revocations(h(v["revocations"]["cose"]), store.root)
    assert revoked.device == "cam-002"
    for name in ("root", "device", "server", "encryption", "session_1", "revocations"):
        assert cose.decode(h(v[name]["cose"])).payload.hex() == v[name]["payload"]


# --------------------------------------------------------------------------- records, media


def test_record_chain_links_and_signatures() -> None:
    v = load("records.json")
    store = trust()
    certs = load("certs.json")
    session_keys = {
        f"session_{n}": store.session_certificate(h(certs[f"session_{n}"]["cose"]), "cam-001")[0]
        for n in (1, 2)
    }
    prev = ZERO_HASH
    kinds = set()
    for seq, item in enumerate(v["records"]):
        signed = SignedRecord.parse(h(item["envelope"]))
        rec = signed.record
        assert rec.seq == seq == item["seq"]
        assert rec.prev == prev == h(item["prev"])
        assert signed.digest.hex() == item["digest"]
        assert signed.envelope.payload.hex() == item["payload"]
        assert cbor.encode(rec.to_cbor()) == h(item["payload"])
        key = session_keys[item["signer"]]
        assert signed.envelope.kid == key.kid
        signed.envelope.verify(key.key)
        kinds.add(rec.kind)
        prev = signed.digest
    assert kinds == set(RecordKind)


def test_media_envelopes_decrypt_to_their_commitment() -> None:
    records = {r["media"]: r for r in load("records.json")["records"] if r["media"]}
    for env in load("media.json")["envelopes"]:
        key = EncryptionKey.from_seed(h(env["recipient_private_key"]))
        assert key.public_key.hex() == env["recipient_public_key"]
        data = h(env["file"])
        suite = Suite(env["suite"])
        session = h(env["session"])
        assert data.hex() == env["header"] + env["enc"] + env["ciphertext"]
        assert media.hpke_info(env["device"], session, env["seq"]).hex() == env["info"]
        assert sha256(data).hex() == env["file_sha256"]
        assert len(data) == env["file_len"]
        salt, plain = media.open_sealed(
            data, key, env["device"], session, env["seq"], expect=h(env["commitment"]), suite=suite
        )
        assert (salt + plain).hex() == env["plaintext"] == env["salt"] + env["media"]
        assert sha256(salt, plain).hex() == env["commitment"]
        if env["name"] in records:
            ref = SignedRecord.parse(h(records[env["name"]]["envelope"])).record.media
            assert ref is not None
            assert (ref.hash.hex(), ref.length, ref.commitment.hex()) == (
                env["file_sha256"],
                env["file_len"],
                env["commitment"],
            )


def _rfc9180_open(env: dict[str, Any]) -> bytes:
    """HPKE base-mode single-shot open written from RFC 9180 alone (not through our code)."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import (
        X25519PrivateKey,
        X25519PublicKey,
    )
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

    header, enc, ct = h(env["header"]), h(env["enc"]), h(env["ciphertext"])
    assert header[:4] == b"UBM1"
    kem, kdf, aead = (int.from_bytes(header[i : i + 2], "big") for i in (4, 6, 8))
    assert (kem, kdf) == (0x0020, 0x0001)

    def extract(salt: bytes, ikm: bytes) -> bytes:
        return hmac.new(salt or bytes(32), ikm, hashlib.sha256).digest()

    def expand(prk: bytes, info: bytes, length: int) -> bytes:
        out, block, i = b"", b"", 1
        while len(out) < length:
            block = hmac.new(prk, block + info + bytes([i]), hashlib.sha256).digest()
            out += block
            i += 1
        return out[:length]

    def labeled_extract(suite: bytes, salt: bytes, label: bytes, ikm: bytes) -> bytes:
        return extract(salt, b"HPKE-v1" + suite + label + ikm)

    def labeled_expand(suite: bytes, prk: bytes, label: bytes, info: bytes, n: int) -> bytes:
        return expand(prk, n.to_bytes(2, "big") + b"HPKE-v1" + suite + label + info, n)

    sk = X25519PrivateKey.from_private_bytes(h(env["recipient_private_key"]))
    dh = sk.exchange(X25519PublicKey.from_public_bytes(enc))
    kem_suite = b"KEM" + kem.to_bytes(2, "big")
    eae_prk = labeled_extract(kem_suite, b"", b"eae_prk", dh)
    kem_context = enc + h(env["recipient_public_key"])
    shared = labeled_expand(kem_suite, eae_prk, b"shared_secret", kem_context, 32)
    suite = b"HPKE" + b"".join(x.to_bytes(2, "big") for x in (kem, kdf, aead))
    psk_id_hash = labeled_extract(suite, b"", b"psk_id_hash", b"")
    info_hash = labeled_extract(suite, b"", b"info_hash", h(env["info"]))
    context = b"\x00" + psk_id_hash + info_hash
    secret = labeled_extract(suite, shared, b"secret", b"")
    nk = {0x0001: 16, 0x0003: 32}[aead]
    key = labeled_expand(suite, secret, b"key", context, nk)
    nonce = labeled_expand(suite, secret, b"base_nonce", context, 12)
    cipher = ChaCha20Poly1305(key) if aead == 0x0003 else AESGCM(key)
    return cipher.decrypt(nonce, ct, b"")


def test_media_envelopes_open_with_an_independent_rfc9180_implementation() -> None:
    for env in load("media.json")["envelopes"]:
        assert _rfc9180_open(env).hex() == env["plaintext"], env["name"]


# --------------------------------------------------------------------------- log


def test_log_roots_and_proofs() -> None:
    v = load("log.json")
    entries = [h(e) for e in v["entries"]]
    roots = {r["size"]: h(r["root"]) for r in v["roots"]}
    assert [log.leaf_hash(e).hex() for e in entries] == v["leaf_hashes"]
    assert roots[0] == sha256(b"")
    for size, root in roots.items():
        assert log.root_of(entries[:size]) == root
    for p in v["inclusion"]:
        path = [h(x) for x in p["path"]]
        log.verify_inclusion(p["index"], p["size"], entries[p["index"]], path, roots[p["size"]])
    for p in v["consistency"]:
        a, b = p["first"], p["second"]
        log.verify_consistency(a, b, roots[a], roots[b], [h(x) for x in p["path"]])


def test_checkpoints_and_receipts() -> None:
    v = load("checkpoint.json")
    store = trust()
    cps = [Checkpoint.load(h(c["cose"]), store) for c in v["checkpoints"]]
    for cp, c in zip(cps, v["checkpoints"], strict=True):
        assert (cp.size, cp.root.hex(), cp.time, cp.log) == (
            c["size"],
            c["root"],
            c["time"],
            v["log"],
        )
    proof = layout.ConsistencyProof.decode(h(v["consistency"]["encoded"]))
    assert (proof.first, proof.second) == (cps[0].size, cps[1].size)
    log.verify_consistency(proof.first, proof.second, cps[0].root, cps[1].root, proof.path)
    record = Receipt.load(h(v["record_receipt"]["cose"]), store)
    mreceipt = Receipt.load(h(v["media_receipt"]["cose"]), store)
    assert record.kind is ReceiptKind.RECORD
    assert mreceipt.kind is ReceiptKind.MEDIA
    seven = load("records.json")["records"][7]
    assert record.record.hex() == seven["digest"] == mreceipt.record.hex()


# --------------------------------------------------------------------------- files


def test_journal_torn_tail() -> None:
    v = load("journal.json")
    scan = JournalScan(io.BytesIO(h(v["file"])), v["name"])
    assert [{"offset": o, "length": len(i)} for o, i in scan.entries()] == v["items"]
    assert scan.torn is not None
    assert scan.torn.name == v["torn"]["name"]
    assert (scan.torn.offset, scan.torn.length, scan.torn.hash.hex()) == (
        v["torn"]["offset"],
        v["torn"]["len"],
        v["torn"]["hash"],
    )


def test_events_verify_under_the_device_key() -> None:
    v = load("events.json")
    device = trust().device_key("cam-001")
    assert device is not None
    for item in v["events"]:
        event, msg = Event.parse(h(item["cose"]))
        msg.verify(device.key)
        assert msg.kid == device.kid
        assert event.kind.value == item["kind"]
        assert topics.parse(item["topic"]).device == event.device


def test_enrolment_proof() -> None:
    e = load("api.json")["enrol"]
    message = api.enrol_message(e["token"], e["device"], h(e["public_key"]))
    assert message.hex() == e["message"]
    Ed25519PublicKey.from_public_bytes(h(e["public_key"])).verify(h(e["proof"]), message)
    request = api.EnrolRequest.model_validate(e["request_json"])
    assert api.b64d(request.proof) == h(e["proof"])
    for item in load("api.json")["b64"]:
        assert api.b64e(h(item["hex"])) == item["b64url"]
        assert api.b64d(item["b64url"]) == h(item["hex"])


def _materialise(files: dict[str, str], root: Path) -> Path:
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(h(data))
    return root


@pytest.mark.parametrize("name", ["bundle.json", "store.json"])
def test_file_sets_verify_as_recorded(name: str, tmp_path: Path) -> None:
    v = load(name)
    root = _materialise(v["files"], tmp_path / "input")
    report = verify_path(root, v["pin"]).to_json()
    report["source"]["path"] = v["verify"]["source"]["path"]
    assert report == v["verify"]
    assert report["verdict"] == "authentic"


def test_bundle_chain_entries_are_the_chain_file() -> None:
    v = load("bundle.json")
    chain = h(v["files"][layout.chain_file("cam-001")])
    assert [e.hex() for e in cbor.iter_bstr_sequence(chain)] == v["chain_entries"]


def test_zipped_vector_bundle_verifies(tmp_path: Path) -> None:
    v = load("bundle.json")
    target = tmp_path / "bundle.zip"
    with zipfile.ZipFile(target, "w") as zf:
        for name, data in v["files"].items():
            zf.writestr(name, h(data))
    assert verify_path(target, v["pin"]).verdict == "authentic"


def test_every_changed_byte_of_the_vector_chain_is_caught(tmp_path: Path) -> None:
    v = load("bundle.json")
    root = _materialise(v["files"], tmp_path / "b")
    chain = root / layout.chain_file("cam-001")
    data = chain.read_bytes()
    for offset in range(0, len(data), 997):
        changed = bytearray(data)
        changed[offset] ^= 0x40
        chain.write_bytes(bytes(changed))
        assert verify_path(root, v["pin"]).verdict == "not_authentic", offset
    chain.write_bytes(data)
    assert verify_path(root, v["pin"]).verdict == "authentic"


def test_main_writes_the_files(tmp_path: Path) -> None:
    for name in generate.FILES:
        (tmp_path / name).write_bytes((HERE / name).read_bytes())
    said: list[str] = []
    generate.main(["--out", str(tmp_path)], said.append)
    assert said
    for name in generate.FILES:
        assert (tmp_path / name).read_bytes() == (HERE / name).read_bytes(), name
