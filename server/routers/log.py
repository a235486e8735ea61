"""The transparency log, server time and trust material: public, read-only."""

from __future__ import annotations

from fastapi import APIRouter, Query

from protocol.api import API_PREFIX, ProofResponse, ServerTime, SignedBlob, b64e
from protocol.errors import ProofError
from server import models
from server.deps import MAX_SEQ, ServicesDep
from server.errors import BadRequestError, NotFoundError, UnavailableError
from server.routers.problems import PROBLEMS
from server.schemas import TrustMaterial


async def _size() -> int:
    head = await models.LogHead.get_or_none(id=1)
    return head.size if head is not None else 0


def router() -> APIRouter:
    """The log, time and trust routes."""
    api = APIRouter(prefix=API_PREFIX, tags=["log"])

    @api.get("/log/checkpoint", response_model=SignedBlob, responses=PROBLEMS)
    async def checkpoint(services: ServicesDep) -> SignedBlob:
        """The newest signed checkpoint (signed now if the log grew since the last one)."""
        data = await services.writer.checkpoint()
        if data is None:
            raise UnavailableError("no checkpoint yet")
        return SignedBlob(data=b64e(data))

    @api.get("/log/inclusion", response_model=ProofResponse, responses=PROBLEMS)
    async def inclusion(
        services: ServicesDep,
        index: int = Query(ge=0, le=MAX_SEQ),
        size: int = Query(ge=1, le=MAX_SEQ),
    ) -> ProofResponse:
        """The inclusion proof of entry ``index`` in the tree of ``size`` entries."""
        if size > await _size():
            raise NotFoundError(f"the log has fewer than {size} entries")
        if index >= size:
            raise BadRequestError(f"entry {index} is not in a tree of {size} entries")
        try:
            path = await services.nodes.inclusion(index, size)
        except ProofError as exc:
            raise BadRequestError(str(exc)) from exc
        return ProofResponse(first=index, second=size, path=[b64e(p) for p in path])

    @api.get("/log/consistency", response_model=ProofResponse, responses=PROBLEMS)
    async def consistency(
        services: ServicesDep,
        first: int = Query(ge=0, le=MAX_SEQ),
        second: int = Query(ge=0, le=MAX_SEQ),
    ) -> ProofResponse:
        """The consistency proof from tree size ``first`` to ``second``."""
        if first > second:
            raise BadRequestError("first must not exceed second")
        if second > await _size():
            raise NotFoundError(f"the log has fewer than {second} entries")
        try:
            path = await services.nodes.consistency(first, second)
        except ProofError as exc:
            raise BadRequestError(str(exc)) from exc
        return ProofResponse(first=first, second=second, path=[b64e(p) for p in path])

    @api.get("/time", response_model=ServerTime)
    async def server_time(services: ServicesDep) -> ServerTime:
        """The server's wall clock (also in every response's X-Unbroken-Time header)."""
        return ServerTime(time=services.clock())

    @api.get("/trust", response_model=TrustMaterial)
    async def trust(services: ServicesDep) -> TrustMaterial:
        """The fleet root and the server's certificates (get the fingerprint elsewhere too)."""
        keys = services.keys
        return TrustMaterial(
            root=b64e(keys.root_cose),
            fingerprint=keys.fingerprint,
            server_cert=b64e(keys.server_cert),
            encryption_cert=b64e(keys.encryption_cert),
            log=services.settings.log_name,
        )

    @api.get("/revocations", response_model=SignedBlob, responses=PROBLEMS)
    async def revocations(services: ServicesDep) -> SignedBlob:
        """The newest root-signed revocation list."""
        data = await services.registry.revocations()
        if data is None:
            raise NotFoundError("no device was ever revoked")
        return SignedBlob(data=b64e(data))

    return api
