"""Enrolment with one-time tokens, the device registry, custody register, revocation list."""

from __future__ import annotations

from pathlib import Path

import httpx

from protocol import layout
from protocol.api import EnrolRequest, b64d, b64e, enrol_message
from protocol.certs import Certificate, KeyKind, RootKey, parse_revocations
from protocol.keys import SoftwareSigner, key_id
from protocol.verify import verify_path
from server import models
from server.run import EmbeddedServer, create_enrolment_token
from server.schemas import ExportRequest
from server.settings import Settings
from tests.server.conftest import Enrol
from tests.server.devicekit import JSON, SimDevice, now_us

ENROL = "/api/v1/enrol"


def request(device: str, token: str, signer: SoftwareSigner, proof_token: str | None = None) -> str:
    pk = signer.public_key
    proof = signer.sign(enrol_message(proof_token or token, device, pk))
    return EnrolRequest(
        device=device, token=token, public_key=b64e(pk), proof=b64e(proof)
    ).model_dump_json()


async def test_enrolment(server: EmbeddedServer, anon: httpx.AsyncClient) -> None:
    token = await server.enrolment_token("cam-1")
    signer = SoftwareSigner.generate()
    # a proof over another token is refused
    bad = await anon.post(ENROL, content=request("cam-1", token, signer, "x" * 12), headers=JSON)
    assert bad.status_code == 403
    assert bad.json()["code"] == "bad_proof"
    # a token bound to another device
    wrong = await anon.post(ENROL, content=request("cam-2", token, signer), headers=JSON)
    assert wrong.status_code == 403
    ok = await anon.post(ENROL, content=request("cam-1", token, signer), headers=JSON)
    assert ok.status_code == 200, ok.text
    body = ok.json()
    root = RootKey.load(b64d(body["root"]))
    assert root.fingerprint == server.fingerprint
    cert, msg = Certificate.parse(b64d(body["device_cert"]))
    assert (cert.kind, cert.subject, cert.key) == (KeyKind.DEVICE, "cam-1", signer.public_key)
    msg.verify(root.key)
    # the same token again: only the same device with the same key (a lost answer), new token
    again = await anon.post(ENROL, content=request("cam-1", token, signer), headers=JSON)
    assert again.status_code == 200
    assert again.json()["api_token"] != body["api_token"]
    stolen = await anon.post(
        ENROL, content=request("cam-1", token, SoftwareSigner.generate()), headers=JSON
    )
    assert stolen.status_code == 403
    # an unknown token, an already enrolled id
    unknown = await anon.post(ENROL, content=request("cam-3", "z" * 20, signer), headers=JSON)
    assert unknown.status_code == 403
    other = await server.enrolment_token()
    taken = await anon.post(
        ENROL, content=request("cam-1", other, SoftwareSigner.generate()), headers=JSON
    )
    assert taken.status_code == 409
    # only a hash of tokens is stored
    assert not await models.EnrolmentToken.filter(token_hash=token).exists()
    assert not await models.Device.filter(token_hash=again.json()["api_token"]).exists()


async def test_expired_token(settings: Settings, anon: httpx.AsyncClient) -> None:
    issued = await create_enrolment_token(settings, "cam-1", ttl=0.000001)
    signer = SoftwareSigner.generate()
    response = await anon.post(ENROL, content=request("cam-1", issued.token, signer), headers=JSON)
    assert response.status_code == 403
    assert response.json()["code"] == "bad_token"


async def test_admin_api(
    server: EmbeddedServer, admin: httpx.AsyncClient, anon: httpx.AsyncClient
) -> None:
    assert (await anon.post("/api/v1/admin/enrolment-tokens", json={})).status_code == 401
    response = await admin.post("/api/v1/admin/enrolment-tokens", json={"device": "cam-7"})
    assert response.status_code == 200
    device = SimDevice("cam-7")
    await device.enrol(anon, response.json()["token"])
    listing = await admin.get("/api/v1/admin/devices")
    assert [d["device"] for d in listing.json()["devices"]] == ["cam-7"]
    one = await admin.get("/api/v1/admin/devices/cam-7")
    assert one.json()["fingerprint"] == device.signer.fingerprint
    assert (await admin.get("/api/v1/admin/devices/cam-8")).status_code == 404
    trust = await anon.get("/api/v1/trust")
    assert trust.json()["fingerprint"] == server.fingerprint


async def test_custody_register(
    server: EmbeddedServer, enrolled: Enrol, admin: httpx.AsyncClient
) -> None:
    await enrolled("cam-1")
    url = "/api/v1/admin/devices/cam-1/custody"
    out = {"action": "check_out", "officer": "officer-7", "actor": "sergeant"}
    assert (await admin.post(url, json=out)).status_code == 200
    twice = await admin.post(url, json={**out, "officer": "officer-8"})
    assert twice.status_code == 409
    assert twice.json()["code"] == "checked_out"
    wrong_in = await admin.post(url, json={**out, "action": "check_in", "officer": "officer-8"})
    assert wrong_in.status_code == 409
    assert (await admin.post(url, json={**out, "action": "check_in"})).status_code == 200
    assert (await admin.post(url, json={**out, "officer": "officer-8"})).status_code == 200
    register = (await admin.get(url)).json()
    assert register["custodian"] == "officer-8"
    assert register["intact"] is True
    assert [e["action"] for e in register["entries"]] == ["check_out", "check_in", "check_out"]
    # an edited row breaks the register's hash chain
    row = await models.Custody.filter(device="cam-1").order_by("id").first()
    assert row is not None
    await models.Custody.filter(id=row.id).update(officer="someone-else")
    assert (await admin.get(url)).json()["intact"] is False


async def test_custody_mismatch_is_alerted(
    server: EmbeddedServer, enrolled: Enrol, admin: httpx.AsyncClient
) -> None:
    device, client = await enrolled("cam-1")
    await admin.post(
        "/api/v1/admin/devices/cam-1/custody",
        json={"action": "check_out", "officer": "officer-7", "actor": "desk"},
    )
    device.wall = now_us() + 1_000_000  # recording starts after the check-out
    device.officer = "officer-7"
    device.shift(1)
    device.officer = "officer-9"  # someone the device was not handed to
    device.shift(1)
    await device.sync(client)
    await server.services.coverage.catch_up("cam-1")
    alerts = await models.Alert.filter(kind="custody", device="cam-1")
    assert len(alerts) == 1
    assert "officer-9" in alerts[0].message


async def test_revocation_list(
    server: EmbeddedServer,
    enrolled: Enrol,
    admin: httpx.AsyncClient,
    anon: httpx.AsyncClient,
    tmp_path: Path,
) -> None:
    device, client = await enrolled("cam-1")
    await enrolled("cam-2")
    device.shift(2)
    await device.sync(client)
    assert (await anon.get("/api/v1/revocations")).status_code == 404
    for name in ("cam-1", "cam-2"):
        response = await admin.post(
            f"/api/v1/admin/devices/{name}/revoke", json={"reason": f"{name} lost"}
        )
        assert response.status_code == 200
    signed = b64d((await anon.get("/api/v1/revocations")).json()["data"])
    entries = parse_revocations(signed, server.services.keys.root_key)
    assert [(e.device, e.log_size, e.reason) for e in entries] == [
        ("cam-1", 4, "cam-1 lost"),
        ("cam-2", 4, "cam-2 lost"),
    ]
    assert entries[0].kid == key_id(device.signer.public_key)
    # revoking again changes nothing of the first revocation
    await admin.post("/api/v1/admin/devices/cam-1/revoke", json={"reason": "again"})
    signed = b64d((await anon.get("/api/v1/revocations")).json()["data"])
    assert parse_revocations(signed, server.services.keys.root_key)[0].reason == "cam-1 lost"
    check_out = await admin.post(
        "/api/v1/admin/devices/cam-1/custody",
        json={"action": "check_out", "officer": "o", "actor": "a"},
    )
    assert check_out.status_code == 409
    # what it logged before the revocation still verifies; the bundle carries the list
    out = tmp_path / "bundle"
    await server.export(ExportRequest(device="cam-1"), out)
    assert (out / layout.REVOCATIONS_FILE).read_bytes() == signed
    report = verify_path(out, server.fingerprint)
    assert report.verdict == "authentic", [f.to_json() for f in report.findings]
