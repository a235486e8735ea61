"""Device chain upload: head, records, and media (resumable)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import APIRouter, Query, Request

from protocol import topics
from protocol.api import (
    API_PREFIX,
    MAX_BATCH,
    ChainHead,
    EventBatch,
    EventOutcomes,
    MediaProgress,
    RecordBatch,
    RecordReceipts,
    b64d,
    b64e,
)
from protocol.errors import ProtocolError
from protocol.events import Event, EventKind
from server.deps import MAX_SEQ, DeviceDep, DeviceOrAdminDep, DevicePath, SeqPath, ServicesDep
from server.errors import BadRequestError
from server.routers.problems import PROBLEMS


def router() -> APIRouter:
    """The device chain routes."""
    api = APIRouter(prefix=f"{API_PREFIX}/devices", tags=["devices"])

    @api.get("/{device}/head", response_model=ChainHead, responses=PROBLEMS)
    async def head(device: DevicePath, services: ServicesDep, _: DeviceOrAdminDep) -> ChainHead:
        """The next seq the server expects from the device and the hash of its head."""
        state = await services.ingest.head(device)
        return ChainHead(
            device=device,
            next_seq=state.next_seq,
            head=b64e(state.head) if state.head is not None else None,
        )

    @api.post("/{device}/records", response_model=RecordReceipts, responses=PROBLEMS)
    async def records(
        device: DevicePath, batch: RecordBatch, services: ServicesDep, row: DeviceDep
    ) -> RecordReceipts:
        """Signed records in seq order; a receipt (or the reason for refusal) for each."""
        if len(batch.records) > MAX_BATCH:
            raise BadRequestError(f"at most {MAX_BATCH} records per batch")
        try:
            raws = [b64d(item) for item in batch.records]
        except ValueError as exc:
            raise BadRequestError(str(exc)) from exc
        answer = await services.ingest.ingest(row.id, raws)
        await services.monitor.seen(row.id, upload=True)
        return answer

    @api.post("/{device}/events", response_model=EventOutcomes, responses=PROBLEMS)
    async def events(
        device: DevicePath, batch: EventBatch, services: ServicesDep, row: DeviceDep
    ) -> EventOutcomes:
        """Signed announcements over HTTP: checked as those from the broker are."""
        outcomes: list[str] = []
        for item in batch.events:
            try:
                payload = b64d(item)
                event, _ = Event.parse(payload)
            except (ValueError, ProtocolError) as exc:
                raise BadRequestError(f"not a signed announcement: {exc}") from exc
            channel = (
                topics.Channel.TELEMETRY
                if event.kind is EventKind.TELEMETRY
                else topics.Channel.STATUS
                if event.kind is EventKind.STATUS
                else topics.Channel.EVENTS
            )
            outcome = await services.intake.handle(topics.topic(row.id, channel), payload)
            outcomes.append(outcome.value)
        return EventOutcomes(outcomes=outcomes)

    @api.get("/{device}/media/{seq}", response_model=MediaProgress, responses=PROBLEMS)
    async def media_progress(
        device: DevicePath, seq: SeqPath, services: ServicesDep, row: DeviceDep
    ) -> MediaProgress:
        """How much of the media of record ``seq`` the server holds."""
        return await services.uploads.progress(row.id, seq)

    @api.put(
        "/{device}/media/{seq}",
        response_model=MediaProgress,
        responses=PROBLEMS,
        openapi_extra={
            "requestBody": {
                "content": {
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
                },
                "required": True,
            }
        },
    )
    async def media_upload(
        device: DevicePath,
        seq: SeqPath,
        request: Request,
        services: ServicesDep,
        row: DeviceDep,
        offset: int = Query(ge=0, le=MAX_SEQ, description="where these bytes start"),
    ) -> MediaProgress:
        """Media bytes of record ``seq`` from ``offset``; the media receipt once whole."""
        body: AsyncIterator[bytes] = request.stream()
        progress = await services.uploads.put(row.id, seq, offset, body)
        await services.monitor.seen(row.id, upload=progress.complete)
        return progress

    return api
