"""A device played by the test: real keys, a session key certified by the device key,
records signed and chained, media sealed with HPKE to the server's encryption key.

It talks to the server only through HTTP (an ``httpx`` client, usually over the ASGI
transport of an in-process server), as a real device would, and keeps what a device keeps:
its receipts and the newest checkpoint, which it embeds as the anchor of its next records.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from protocol.api import (
    API_PREFIX,
    ChainHead,
    Enrolment,
    EnrolRequest,
    MediaProgress,
    RecordBatch,
    RecordReceipts,
    b64d,
    b64e,
    enrol_message,
)
from protocol.certs import Certificate, KeyKind, RootKey, TrustStore
from protocol.checkpoint import Checkpoint, Receipt
from protocol.hashing import ZERO_HASH
from protocol.keys import SoftwareSigner
from protocol.media import seal
from protocol.record import (
    Anchor,
    ClockState,
    MediaRef,
    Record,
    RecordKind,
    SignedRecord,
    Suite,
)

SEGMENT_US = 1_000_000
JSON = {"content-type": "application/json"}


def now_us() -> int:
    return time.time_ns() // 1000


@dataclass
class Made:
    """A record the device made, and its media (ciphertext) if any."""

    signed: SignedRecord
    media: bytes | None = None
    plain: bytes | None = None

    @property
    def seq(self) -> int:
        return self.signed.record.seq


@dataclass
class SimDevice:
    """One simulated device."""

    device: str
    signer: SoftwareSigner = field(default_factory=SoftwareSigner.generate)
    suite: Suite = Suite.CHACHA
    boot: bytes = field(default_factory=lambda: os.urandom(16))
    wall: int = field(default_factory=lambda: now_us() - 60_000_000)
    mono: int = 5_000_000
    officer: str | None = None
    incident: str | None = None
    enrolment: Enrolment | None = None
    trust: TrustStore | None = None
    recipient: bytes = b""
    session: bytes | None = None
    session_signer: SoftwareSigner | None = None
    next_seq: int = 0
    prev: bytes = ZERO_HASH
    anchor: Anchor | None = None
    made: list[Made] = field(default_factory=list)
    receipts: dict[int, bytes] = field(default_factory=dict)
    media_receipts: dict[int, bytes] = field(default_factory=dict)

    # ------------------------------------------------------------------ enrolment
    async def enrol(self, client: httpx.AsyncClient, token: str) -> Enrolment:
        """Enrol with a one-time token; keep the trust material."""
        pk = self.signer.public_key
        request = EnrolRequest(
            device=self.device,
            token=token,
            public_key=b64e(pk),
            proof=b64e(self.signer.sign(enrol_message(token, self.device, pk))),
        )
        response = await client.post(
            f"{API_PREFIX}/enrol", content=request.model_dump_json(), headers=JSON
        )
        assert response.status_code == 200, response.text
        enrolment = Enrolment.model_validate_json(response.content)
        self.enrolment = enrolment
        trust = TrustStore(RootKey.load(b64d(enrolment.root)))
        trust.add(b64d(enrolment.device_cert))
        trust.add(b64d(enrolment.server_cert))
        encryption = trust.add(b64d(enrolment.encryption_cert))
        self.trust = trust
        self.recipient = encryption.key
        return enrolment

    def client(self, base: httpx.AsyncClient) -> httpx.AsyncClient:
        """A client with this device's API token, on the same transport as ``base``."""
        assert self.enrolment is not None
        return httpx.AsyncClient(
            transport=base._transport,
            base_url=base.base_url,
            headers={"authorization": f"Bearer {self.enrolment.api_token}"},
        )

    # ------------------------------------------------------------------ chain
    def _span(self, duration: int) -> tuple[int, int, int, int]:
        span = (self.wall, self.wall + duration, self.mono, self.mono + duration)
        self.wall += duration
        self.mono += duration
        return span

    def _make(
        self,
        kind: RecordKind,
        body: dict[str, Any] | None = None,
        media: MediaRef | None = None,
        duration: int = 0,
        signer: SoftwareSigner | None = None,
    ) -> SignedRecord:
        assert self.session is not None
        t0, t1, m0, m1 = self._span(duration)
        record = Record(
            suite=self.suite,
            device=self.device,
            session=self.session,
            boot=self.boot,
            seq=self.next_seq,
            prev=self.prev,
            kind=kind,
            t0=t0,
            t1=t1,
            m0=m0,
            m1=m1,
            clock=ClockState("ntp", 1500, True),
            body=body or {},
            officer=self.officer,
            incident=self.incident,
            media=media,
            anchor=self.anchor,
        )
        return SignedRecord.create(record, signer or self.session_signer)  # type: ignore[arg-type]

    def _commit(
        self, signed: SignedRecord, media: bytes | None = None, plain: bytes | None = None
    ) -> Made:
        self.next_seq += 1
        self.prev = signed.digest
        made = Made(signed, media, plain)
        self.made.append(made)
        return made

    def open_session(self, reason: str = "duty") -> Made:
        """A new session key, certified by the device key, and the opening record."""
        self.session = os.urandom(16)
        self.session_signer = SoftwareSigner.generate()
        cert = Certificate.issue(
            self.signer,
            KeyKind.SESSION,
            self.device,
            self.session_signer.public_key,
            self.wall,
            session=self.session,
        )
        return self._commit(self._make(RecordKind.SESSION_OPEN, {"cert": cert, "reason": reason}))

    def event(self, kind: RecordKind, body: dict[str, Any] | None = None) -> Made:
        """A record without media."""
        return self._commit(self._make(kind, body))

    def segment(self, payload: bytes | None = None, duration: int = SEGMENT_US) -> Made:
        """A segment of (fake) video, sealed to the server."""
        assert self.session is not None
        plain = (
            payload if payload is not None else os.urandom(300) + self.next_seq.to_bytes(8, "big")
        )
        sealed = seal(plain, self.recipient, self.suite, self.device, self.session, self.next_seq)
        ref = MediaRef(sealed.hash, len(sealed.data), sealed.commitment, "video/mp2t")
        signed = self._make(RecordKind.SEGMENT, {"frames": 25}, ref, duration)
        return self._commit(signed, sealed.data, plain)

    def pause(self, us: int) -> None:
        """Time passes without recording (same boot)."""
        self.wall += us
        self.mono += us

    def close(self) -> Made:
        return self.event(RecordKind.SESSION_CLOSE, {"reason": "off_duty"})

    def crash_and_reboot(self, downtime: int = 3_000_000) -> list[Made]:
        """Power loss: new boot, new session, a recovery record naming the last durable seq."""
        last = self.made[-1].signed
        self.boot = os.urandom(16)
        self.wall += downtime
        self.mono = 2_000_000
        opened = self.open_session("boot")
        recovery = self.event(
            RecordKind.RECOVERY,
            {
                "last_seq": last.record.seq,
                "last_hash": last.digest,
                "prev_boot": last.record.boot,
                "prev_session": last.record.session,
                "torn": [],
            },
        )
        return [opened, recovery]

    def shift(self, segments: int) -> list[Made]:
        out = [self.open_session()]
        out += [self.segment() for _ in range(segments)]
        out.append(self.close())
        return out

    # ------------------------------------------------------------------ sync
    async def head(self, client: httpx.AsyncClient) -> ChainHead:
        response = await client.get(f"{API_PREFIX}/devices/{self.device}/head")
        assert response.status_code == 200, response.text
        return ChainHead.model_validate_json(response.content)

    async def send(self, client: httpx.AsyncClient, made: list[Made]) -> RecordReceipts:
        """Upload records; keep receipts and the checkpoint (the next anchor)."""
        batch = RecordBatch(records=[b64e(m.signed.encoded) for m in made])
        response = await client.post(
            f"{API_PREFIX}/devices/{self.device}/records",
            content=batch.model_dump_json(),
            headers=JSON,
        )
        assert response.status_code == 200, response.text
        answer = RecordReceipts.model_validate_json(response.content)
        assert self.trust is not None
        for outcome in answer.outcomes:
            if outcome.receipt is not None:
                data = b64d(outcome.receipt)
                Receipt.load(data, self.trust)
                self.receipts[outcome.seq] = data
        if answer.checkpoint is not None:
            cp = Checkpoint.load(b64d(answer.checkpoint), self.trust)
            self.anchor = Anchor(cp.size, cp.root)
        return answer

    async def upload_media(
        self, client: httpx.AsyncClient, made: Made, chunk: int = 1 << 16
    ) -> MediaProgress:
        """Upload one media file from where the server stands, in chunks."""
        assert made.media is not None
        path = f"{API_PREFIX}/devices/{self.device}/media/{made.seq}"
        response = await client.get(path)
        assert response.status_code == 200, response.text
        progress = MediaProgress.model_validate_json(response.content)
        while not progress.complete:
            part = made.media[progress.offset : progress.offset + chunk]
            response = await client.put(path, params={"offset": progress.offset}, content=part)
            assert response.status_code == 200, response.text
            progress = MediaProgress.model_validate_json(response.content)
        assert progress.receipt is not None
        self.media_receipts[made.seq] = b64d(progress.receipt)
        return progress

    async def sync(self, client: httpx.AsyncClient) -> None:
        """Everything the server lacks: records from its head, then every media file."""
        head = await self.head(client)
        pending = [m for m in self.made if m.seq >= head.next_seq]
        for start in range(0, len(pending), 64):
            await self.send(client, pending[start : start + 64])
        for made in self.made:
            if made.media is not None and made.seq not in self.media_receipts:
                await self.upload_media(client, made)
