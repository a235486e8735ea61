"""``POST /api/v1/enrol``: a device joins the fleet with a one-time token."""

from __future__ import annotations

from fastapi import APIRouter

from protocol.api import API_PREFIX, Enrolment, EnrolRequest
from server.deps import ServicesDep
from server.routers.problems import PROBLEMS


def router() -> APIRouter:
    """The enrolment route."""
    api = APIRouter(prefix=API_PREFIX, tags=["enrolment"])

    @api.post("/enrol", response_model=Enrolment, responses=PROBLEMS)
    async def enrol(request: EnrolRequest, services: ServicesDep) -> Enrolment:
        """Check the token and the proof of possession; certify the device key."""
        return await services.registry.enrol(request)

    return api
