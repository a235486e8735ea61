"""The device registry: enrolment tokens, enrolment, API tokens, custody and revocation.

Enrolment: an administrator makes a one-time token (optionally bound to a device id); the
device sends its id, public key, the token and a signature of
:func:`protocol.api.enrol_message` with its key (proof of possession). The server checks
them, certifies the key with the fleet root (certificate kind ``device``) and returns the
trust material and an API token. Only SHA-256 hashes of tokens are stored.

Custody (R-DEV-2): check-out and check-in of a device to an officer, a hash-chained
register per device. Revocation (R-DEV-3): the device is marked revoked at the current log
size, under the log lock so that nothing of it is logged after that size, and a new
root-signed revocation list is issued.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable

from protocol import cbor
from protocol.api import Enrolment, EnrolRequest, b64d, b64e, enrol_message
from protocol.certs import Certificate, KeyKind, Revocation, issue_revocations
from protocol.errors import ProtocolError
from protocol.hashing import ZERO_HASH, fingerprint, sha256
from protocol.keys import PUBLIC_KEY_LEN, key_id, verify_signature
from server import models
from server.db import IntegrityError
from server.errors import (
    BadRequestError,
    ConflictError,
    ForbiddenError,
    NotFoundError,
)
from server.ingest import LogWriter
from server.keys import ServerKeys
from server.schemas import (
    CustodyEntry,
    CustodyRegister,
    CustodyRequest,
    DeviceInfo,
    DeviceList,
    EnrolmentTokenIssued,
    RevocationIssued,
)

Clock = Callable[[], int]


def token_hash(token: str) -> str:
    """What is stored of a token."""
    return hashlib.sha256(token.encode()).hexdigest()


def _custody_hash(prev: bytes, entry: models.Custody) -> bytes:
    body = cbor.encode(
        [entry.device, entry.officer, entry.action, entry.time, entry.actor, entry.note]
    )
    return sha256(prev, body)


class Registry:
    """Devices, their tokens, custody and revocation."""

    def __init__(
        self,
        keys: ServerKeys,
        writer: LogWriter,
        log_name: str,
        clock: Clock,
        token_ttl: float,
    ) -> None:
        self.keys = keys
        self.writer = writer
        self.log_name = log_name
        self.clock = clock
        self.token_ttl = token_ttl

    # ------------------------------------------------------------------ enrolment
    async def create_enrolment_token(
        self, device: str | None = None, ttl: float | None = None
    ) -> EnrolmentTokenIssued:
        """A one-time token for enrolling ``device`` (any device if None)."""
        self.keys.require_root()
        token = secrets.token_urlsafe(24)
        now = self.clock()
        expires = now + int((ttl or self.token_ttl) * 1_000_000)
        await models.EnrolmentToken.create(
            token_hash=token_hash(token), device=device, created=now, expires=expires
        )
        return EnrolmentTokenIssued(token=token, device=device, expires=expires)

    async def enrol(self, request: EnrolRequest) -> Enrolment:
        """Check an enrolment request; certify the device key; hand out the API token."""
        root = self.keys.require_root()
        try:
            public_key = b64d(request.public_key)
            proof = b64d(request.proof)
        except ValueError as exc:
            raise BadRequestError(str(exc)) from exc
        if len(public_key) != PUBLIC_KEY_LEN:
            raise BadRequestError(f"public_key must be {PUBLIC_KEY_LEN} bytes")
        try:
            verify_signature(
                public_key, enrol_message(request.token, request.device, public_key), proof
            )
        except ProtocolError as exc:
            raise ForbiddenError(
                "the proof is not the device key's signature of the enrolment message",
                code="bad_proof",
            ) from exc
        now = self.clock()
        api_token = secrets.token_urlsafe(32)
        async with self.writer.db.transaction():
            token = await models.EnrolmentToken.select_for_update().get_or_none(
                token_hash=token_hash(request.token)
            )
            if token is None or token.expires < now:
                raise ForbiddenError("unknown or expired enrolment token", code="bad_token")
            if token.device is not None and token.device != request.device:
                raise ForbiddenError(
                    f"this token enrols {token.device!r}, not {request.device!r}",
                    code="bad_token",
                )
            existing = await models.Device.get_or_none(id=request.device)
            if token.used is not None:
                # A retry after a lost answer: the same device with the same key only.
                if not (
                    token.used_by == request.device
                    and existing is not None
                    and bytes(existing.public_key) == public_key
                ):
                    raise ForbiddenError("this enrolment token was used", code="bad_token")
            elif existing is not None:
                raise ConflictError(
                    f"{request.device} is already enrolled", code="already_enrolled"
                )
            if existing is None:
                cert = Certificate.issue(root, KeyKind.DEVICE, request.device, public_key, now)
                try:
                    await models.Device.create(
                        id=request.device,
                        public_key=public_key,
                        cert=cert,
                        enrolled=now,
                        token_hash=token_hash(api_token),
                    )
                except IntegrityError as exc:
                    raise ConflictError(
                        f"{request.device} was enrolled meanwhile", code="already_enrolled"
                    ) from exc
            else:
                cert = bytes(existing.cert)
                existing.token_hash = token_hash(api_token)
                await existing.save(update_fields=["token_hash"])
            token.used = now
            token.used_by = request.device
            await token.save(update_fields=["used", "used_by"])
        return Enrolment(
            device=request.device,
            root=b64e(self.keys.root_cose),
            device_cert=b64e(cert),
            server_cert=b64e(self.keys.server_cert),
            encryption_cert=b64e(self.keys.encryption_cert),
            log=self.log_name,
            api_token=api_token,
        )

    async def device_of_token(self, token: str) -> models.Device | None:
        """The device an API token belongs to (revoked devices too: the caller decides)."""
        row = await models.Device.get_or_none(token_hash=token_hash(token))
        if row is not None and hmac.compare_digest(row.token_hash, token_hash(token)):
            return row
        return None

    # ------------------------------------------------------------------ registry
    async def device(self, device: str) -> models.Device:
        """A device row, or NotFoundError."""
        row = await models.Device.get_or_none(id=device)
        if row is None:
            raise NotFoundError(f"unknown device {device!r}")
        return row

    async def info(self, row: models.Device) -> DeviceInfo:
        """What the registry shows of a device."""
        return DeviceInfo(
            device=row.id,
            fingerprint=fingerprint(bytes(row.public_key)),
            enrolled=row.enrolled,
            next_seq=row.next_seq,
            head=b64e(bytes(row.head)) if row.head is not None else None,
            revoked=row.revoked,
            revoked_reason=row.revoked_reason,
            custodian=await self.custodian(row.id),
        )

    async def list_devices(self) -> DeviceList:
        """Every device, by id."""
        rows = await models.Device.all().order_by("id")
        return DeviceList(devices=[await self.info(r) for r in rows])

    # ------------------------------------------------------------------ revocation
    async def revoke(self, device: str, reason: str) -> RevocationIssued:
        """Revoke ``device`` as of the current log size; issue the new revocation list."""
        root = self.keys.require_root()
        now = self.clock()
        async with self.writer.exclusive() as size:
            row = await models.Device.select_for_update().get_or_none(id=device)
            if row is None:
                raise NotFoundError(f"unknown device {device!r}")
            if row.revoked is None:
                row.revoked = now
                row.revoked_log_size = size
                row.revoked_reason = reason
                await row.save(update_fields=["revoked", "revoked_log_size", "revoked_reason"])
            revoked = await models.Device.filter(revoked__isnull=False).order_by("id")
            entries = [
                Revocation(
                    r.id,
                    key_id(bytes(r.public_key)),
                    r.revoked or now,
                    r.revoked_log_size or 0,
                    (r.revoked_reason or "revoked")[:500],
                )
                for r in revoked
            ]
            signed = issue_revocations(root, now, entries)
            await models.RevocationList.create(issued=now, encoded=signed)
        return RevocationIssued(
            device=device,
            time=row.revoked,
            log_size=row.revoked_log_size or 0,
            reason=row.revoked_reason or reason,
            revocations=b64e(signed),
        )

    @staticmethod
    async def revocations() -> bytes | None:
        """The newest root-signed revocation list, if any device was ever revoked."""
        newest = await models.RevocationList.all().order_by("-id").first()
        return bytes(newest.encoded) if newest is not None else None

    # ------------------------------------------------------------------ custody
    async def custody(self, device: str, request: CustodyRequest) -> CustodyEntry:
        """Check ``device`` out to an officer or back in; append to its register."""
        async with self.writer.db.transaction():
            row = await models.Device.select_for_update().get_or_none(id=device)
            if row is None:
                raise NotFoundError(f"unknown device {device!r}")
            last = await models.Custody.filter(device=device).order_by("-id").first()
            holder = last.officer if last is not None and last.action == "check_out" else None
            if request.action == "check_out":
                if row.revoked is not None:
                    raise ConflictError(f"{device} is revoked", code="device_revoked")
                if holder is not None:
                    raise ConflictError(
                        f"{device} is checked out to {holder}; check it in first",
                        code="checked_out",
                    )
            elif holder != request.officer:
                raise ConflictError(
                    f"{device} is not checked out to {request.officer}"
                    + (f" but to {holder}" if holder else ""),
                    code="not_checked_out",
                )
            entry = models.Custody(
                device=device,
                officer=request.officer,
                action=request.action,
                time=self.clock(),
                actor=request.actor,
                note=request.note,
                prev=bytes(last.hash) if last is not None else ZERO_HASH,
            )
            entry.hash = _custody_hash(bytes(entry.prev), entry)
            try:
                await entry.save()
            except IntegrityError as exc:
                raise ConflictError("the custody register changed; retry") from exc
        return _entry(entry)

    @staticmethod
    async def custodian(device: str, at: int | None = None) -> str | None:
        """Who holds ``device`` now (or at time ``at``)."""
        query = models.Custody.filter(device=device)
        if at is not None:
            query = query.filter(time__lte=at)
        last = await query.order_by("-id").first()
        return last.officer if last is not None and last.action == "check_out" else None

    async def custody_register(self, device: str) -> CustodyRegister:
        """The register of ``device``, oldest first, with its hash chain checked."""
        await self.device(device)
        entries = await models.Custody.filter(device=device).order_by("id")
        prev = ZERO_HASH
        intact = True
        for entry in entries:
            if bytes(entry.prev) != prev or bytes(entry.hash) != _custody_hash(prev, entry):
                intact = False
            prev = bytes(entry.hash)
        return CustodyRegister(
            device=device,
            custodian=await self.custodian(device),
            intact=intact,
            entries=[_entry(e) for e in entries],
        )


def _entry(entry: models.Custody) -> CustodyEntry:
    return CustodyEntry(
        id=entry.id,
        device=entry.device,
        officer=entry.officer,
        action=entry.action,
        time=entry.time,
        actor=entry.actor,
        note=entry.note,
        hash=bytes(entry.hash).hex(),
    )
