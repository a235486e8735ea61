"""Administration: enrolment tokens, the registry, custody, revocation, checkpoints, exports.

Every route needs the administrator token. Exports are written under ``{data}/exports``.
"""

from __future__ import annotations

import secrets
import time

from fastapi import APIRouter

from protocol.api import API_PREFIX, SignedBlob, b64e
from server import models
from server.deps import AdminDep, DevicePath, ServicesDep
from server.errors import UnavailableError
from server.routers.problems import PROBLEMS
from server.schemas import (
    CustodyEntry,
    CustodyRegister,
    CustodyRequest,
    DeviceInfo,
    DeviceList,
    EnrolmentTokenIssued,
    EnrolmentTokenRequest,
    ExportDone,
    ExportRequest,
    OrphanScan,
    RevocationIssued,
    RevokeRequest,
)


def router() -> APIRouter:
    """The administration routes."""
    api = APIRouter(prefix=f"{API_PREFIX}/admin", tags=["admin"], responses=PROBLEMS)

    @api.post("/enrolment-tokens", response_model=EnrolmentTokenIssued)
    async def enrolment_token(
        request: EnrolmentTokenRequest, services: ServicesDep, _: AdminDep
    ) -> EnrolmentTokenIssued:
        """A one-time enrolment token (shown once)."""
        return await services.registry.create_enrolment_token(request.device, request.ttl)

    @api.get("/devices", response_model=DeviceList)
    async def devices(services: ServicesDep, _: AdminDep) -> DeviceList:
        """The device registry."""
        return await services.registry.list_devices()

    @api.get("/devices/{device}", response_model=DeviceInfo)
    async def device(device: DevicePath, services: ServicesDep, _: AdminDep) -> DeviceInfo:
        """One device of the registry."""
        return await services.registry.info(await services.registry.device(device))

    @api.post("/devices/{device}/revoke", response_model=RevocationIssued)
    async def revoke(
        device: DevicePath, request: RevokeRequest, services: ServicesDep, _: AdminDep
    ) -> RevocationIssued:
        """Report a device lost or stolen: revoke it as of the current log size."""
        return await services.registry.revoke(device, request.reason)

    @api.post("/devices/{device}/custody", response_model=CustodyEntry)
    async def custody(
        device: DevicePath, request: CustodyRequest, services: ServicesDep, _: AdminDep
    ) -> CustodyEntry:
        """Check the device out to an officer, or back in (R-DEV-2)."""
        return await services.registry.custody(device, request)

    @api.get("/devices/{device}/custody", response_model=CustodyRegister)
    async def custody_register(
        device: DevicePath, services: ServicesDep, _: AdminDep
    ) -> CustodyRegister:
        """The device's custody register, with its hash chain checked."""
        return await services.registry.custody_register(device)

    @api.post("/checkpoint", response_model=SignedBlob)
    async def checkpoint(services: ServicesDep, _: AdminDep) -> SignedBlob:
        """Sign a checkpoint now (if the log grew since the last one) and return it."""
        data = await services.writer.checkpoint()
        if data is None:
            raise UnavailableError("no checkpoint yet")
        return SignedBlob(data=b64e(data))

    @api.post("/orphans", response_model=OrphanScan)
    async def orphans(services: ServicesDep, _: AdminDep) -> OrphanScan:
        """Walk the blob store for blobs no record vouches for (kept, registered, alerted)."""
        found = await services.uploads.find_orphans()
        return OrphanScan(new=found, total=await models.OrphanBlob.all().count())

    @api.post("/exports", response_model=ExportDone)
    async def export(request: ExportRequest, services: ServicesDep, _: AdminDep) -> ExportDone:
        """Write an export bundle under the data directory."""
        name = request.name or f"export-{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(4)}"
        out = services.settings.data / "exports" / name
        return await services.exporter.export(request, out)

    return api
