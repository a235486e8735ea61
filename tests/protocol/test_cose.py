"""COSE_Sign1 envelopes: structure, strict decoding, signatures, and an off-the-shelf check
with pycose (an independent COSE implementation)."""

from __future__ import annotations

import contextlib
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycose.headers import KID, Algorithm, ContentType
from pycose.keys.curves import Ed25519
from pycose.keys.okp import OKPKey
from pycose.messages.sign1message import Sign1Message

from protocol import cbor, cose
from protocol.errors import AlgorithmError, DecodeError, SignatureError
from protocol.hashing import sha256
from protocol.keys import SoftwareSigner

CT = cose.ContentType.RECORD
PAYLOAD = cbor.encode({"v": 1, "hello": "world"})


@pytest.fixture(scope="module")
def signer() -> SoftwareSigner:
    """A fixed test key."""
    return SoftwareSigner.from_seed(sha256(b"unbroken cose test key"))


@pytest.fixture(scope="module")
def envelope(signer: SoftwareSigner) -> bytes:
    """A record-typed envelope over PAYLOAD."""
    return cose.sign(signer, CT, PAYLOAD)


def _parts(envelope: bytes) -> list[Any]:
    tag = cbor2.loads(envelope)
    assert tag.tag == cose.COSE_SIGN1_TAG
    return list(tag.value)


def _build(
    protected: dict[int, Any] | bytes,
    payload: bytes,
    signer: SoftwareSigner | None,
    *,
    unprotected: dict[int, Any] | None = None,
    signature: bytes | None = None,
    tag: int | None = cose.COSE_SIGN1_TAG,
    length: int = 4,
) -> bytes:
    prot = protected if isinstance(protected, bytes) else cbor.encode(protected)
    if signature is None:
        assert signer is not None
        signature = signer.sign(cbor.encode(["Signature1", prot, b"", payload]))
    body: list[Any] = [prot, unprotected or {}, payload, signature][:length]
    if length > 4:
        body += [b""] * (length - 4)
    return cbor2.dumps(body if tag is None else cbor2.CBORTag(tag, body), canonical=True)


def _headers(signer: SoftwareSigner, **changes: Any) -> dict[int, Any]:
    headers: dict[int, Any] = {1: cose.ALG_EDDSA, 3: str(CT), 4: signer.kid}
    for key, value in changes.items():
        number = {"alg": 1, "ct": 3, "kid": 4}.get(key)
        if number is None:
            headers[int(key.removeprefix("h"))] = value
        elif value is None:
            del headers[number]
        else:
            headers[number] = value
    return headers


def test_structure(signer: SoftwareSigner, envelope: bytes) -> None:
    protected, unprotected, payload, signature = _parts(envelope)
    assert cbor.decode(protected) == {1: -8, 3: str(CT), 4: signer.kid}
    assert protected.startswith(bytes.fromhex("a3012703"))  # {1: -8, 3: ...}: sorted keys
    assert dict(unprotected) == {}
    assert payload == PAYLOAD
    assert len(signature) == 64
    assert envelope[:2] == b"\xd2\x84"  # tag 18, array of 4


def test_decode_and_verify(signer: SoftwareSigner, envelope: bytes) -> None:
    msg = cose.decode(envelope, CT)
    assert msg.content_type is CT
    assert msg.kid == signer.kid == sha256(signer.public_key)
    assert msg.payload == PAYLOAD
    assert msg.encoded == envelope
    assert msg.digest == sha256(envelope)
    assert msg.body("x") == {"v": 1, "hello": "world"}
    msg.verify(signer.public_key)


def test_sig_structure_bytes(envelope: bytes) -> None:
    msg = cose.decode(envelope)
    expected = cbor2.dumps(["Signature1", msg.protected, b"", PAYLOAD])
    assert msg.to_be_signed() == expected
    assert expected[:12] == b"\x84\x6aSignature1"


def test_signatures_are_deterministic(signer: SoftwareSigner, envelope: bytes) -> None:
    assert cose.sign(signer, CT, PAYLOAD) == envelope  # Ed25519 is deterministic
    assert cose.sign_object(signer, CT, {"hello": "world", "v": 1}) == envelope


def test_wrong_key_and_altered_payload(signer: SoftwareSigner, envelope: bytes) -> None:
    other = SoftwareSigner.from_seed(sha256(b"another"))
    with pytest.raises(SignatureError):
        cose.decode(envelope).verify(other.public_key)
    protected, _, _, signature = _parts(envelope)
    altered = _build(protected, cbor.encode({"v": 1, "hello": "World"}), None, signature=signature)
    with pytest.raises(SignatureError):
        cose.decode(altered).verify(signer.public_key)


def test_expected_content_type(envelope: bytes) -> None:
    with pytest.raises(DecodeError, match="expected"):
        cose.decode(envelope, cose.ContentType.CERTIFICATE)


@pytest.mark.parametrize("content_type", list(cose.ContentType))
def test_every_content_type_round_trips(
    signer: SoftwareSigner, content_type: cose.ContentType
) -> None:
    msg = cose.decode(cose.sign(signer, content_type, PAYLOAD), content_type)
    assert msg.content_type is content_type
    msg.verify(signer.public_key)


@pytest.mark.parametrize("alg", [-7, -35, -36, -37, -257, 1, 0, "EdDSA", -9, -19])
def test_any_alg_but_eddsa_is_algorithm_confusion(signer: SoftwareSigner, alg: object) -> None:
    data = _build(_headers(signer, alg=alg), PAYLOAD, signer)
    with pytest.raises(AlgorithmError):
        cose.decode(data)


def test_structural_rejections(signer: SoftwareSigner, envelope: bytes) -> None:
    good = _headers(signer)
    protected, _, _, signature = _parts(envelope)
    cases = {
        "untagged": _build(good, PAYLOAD, signer, tag=None),
        "COSE_Sign tag": _build(good, PAYLOAD, signer, tag=98),
        "COSE_Mac0 tag": _build(good, PAYLOAD, signer, tag=17),
        "three items": _build(good, PAYLOAD, signer, length=3),
        "five items": _build(good, PAYLOAD, signer, length=5),
        "unprotected kid": _build(good, PAYLOAD, signer, unprotected={4: signer.kid}),
        "extra header": _build({**good, 5: b"\x00" * 12}, PAYLOAD, signer),
        "critical header": _build({**good, 2: [5]}, PAYLOAD, signer),
        "no kid": _build(_headers(signer, kid=None), PAYLOAD, signer),
        "no content type": _build(_headers(signer, ct=None), PAYLOAD, signer),
        "no alg": _build(_headers(signer, alg=None), PAYLOAD, signer),
        "numeric content type": _build(_headers(signer, ct=60), PAYLOAD, signer),
        "unknown content type": _build(_headers(signer, ct="application/cbor"), PAYLOAD, signer),
        "short kid": _build(_headers(signer, kid=signer.kid[:16]), PAYLOAD, signer),
        "text kid": _build(_headers(signer, kid="k" * 32), PAYLOAD, signer),
        "short signature": _build(protected, PAYLOAD, None, signature=signature[:63]),
        "long signature": _build(protected, PAYLOAD, None, signature=signature + b"\x00"),
        "detached payload": cbor2.dumps(cbor2.CBORTag(18, [protected, {}, None, signature])),
        "protected as map": cbor2.dumps(cbor2.CBORTag(18, [good, {}, PAYLOAD, signature])),
        "protected not canonical": _build(
            b"\xa3\x04\x58\x20" + signer.kid + b"\x01\x27\x03" + cbor.encode(str(CT)),
            PAYLOAD,
            signer,
        ),
        "protected empty": _build(b"", PAYLOAD, signer),
        "trailing byte": envelope + b"\x00",
        "not CBOR": b"\xd2\x84\x58",
    }
    accepted = []
    for name, data in cases.items():
        try:
            cose.decode(data)
        except DecodeError:
            continue
        accepted.append(name)
    assert accepted == []


def test_header_order_in_protected_bytes_is_part_of_what_is_signed(signer: SoftwareSigner) -> None:
    # The same headers in another (non-deterministic) order are refused before any check, so
    # no envelope has two encodings.
    unsorted = b"\xa3\x03" + cbor.encode(str(CT)) + b"\x01\x27\x04\x58\x20" + signer.kid
    with pytest.raises(DecodeError):
        cose.decode(_build(unsorted, PAYLOAD, signer))


def test_payload_is_not_decoded_until_asked(signer: SoftwareSigner) -> None:
    msg = cose.decode(cose.sign(signer, CT, b"\xff\xff"))
    with pytest.raises(DecodeError):
        msg.body("payload")


# ----------------------------------------------------------------- pycose
def test_pycose_verifies_our_envelope(signer: SoftwareSigner, envelope: bytes) -> None:
    # pycose 1.1 cannot decode cbor2 6's tag objects itself: decode the tag with cbor2.
    protected, unprotected, payload, signature = _parts(envelope)
    msg = Sign1Message.from_cose_obj([protected, dict(unprotected), payload, signature], True)
    alg = msg.get_attr(Algorithm)
    assert alg is not None
    assert alg.identifier == -8
    assert msg.get_attr(KID) == signer.kid
    assert msg.get_attr(ContentType) == str(CT)
    assert msg.payload == PAYLOAD
    msg.key = OKPKey(crv=Ed25519, x=signer.public_key)
    assert msg.verify_signature()
    msg.key = OKPKey(crv=Ed25519, x=SoftwareSigner.from_seed(sha256(b"x")).public_key)
    assert not msg.verify_signature()


def test_our_decoder_accepts_pycose_envelope(signer: SoftwareSigner, envelope: bytes) -> None:
    seed = sha256(b"unbroken cose test key")
    msg = Sign1Message(
        phdr={Algorithm: "EdDSA", ContentType: str(CT), KID: signer.kid}, payload=PAYLOAD
    )
    msg.key = OKPKey(crv=Ed25519, d=seed, x=signer.public_key)
    encoded = msg.encode()
    assert encoded == envelope  # same headers, same deterministic encoding, same signature
    decoded = cose.decode(encoded, CT)
    decoded.verify(signer.public_key)


# ----------------------------------------------------------------- fuzzing
@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120))
def test_random_bytes(data: bytes) -> None:
    with contextlib.suppress(DecodeError, AlgorithmError):  # any other error fails the test
        cose.decode(b"\xd2\x84" + data)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_a_changed_byte_never_verifies(data: st.DataObject) -> None:
    signer = SoftwareSigner.from_seed(sha256(b"unbroken cose test key"))
    envelope = bytearray(cose.sign(signer, CT, PAYLOAD))
    pos = data.draw(st.integers(0, len(envelope) - 1))
    envelope[pos] ^= data.draw(st.integers(1, 255))
    try:
        msg = cose.decode(bytes(envelope))
    except (DecodeError, AlgorithmError):
        return
    with pytest.raises(SignatureError):
        msg.verify(signer.public_key)
