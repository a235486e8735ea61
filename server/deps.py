"""Request dependencies as ``Annotated`` aliases: the services, and who is calling.

A device authenticates with the bearer token it received at enrolment, and may act only on
its own chain. The administrator authenticates with the admin token. Everything a device
sends is signed anyway; the tokens keep strangers from filling the server.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from server import models
from server.errors import ForbiddenError, UnauthorizedError, UnavailableError
from server.schemas import DEVICE_PATTERN
from server.services import Services

MAX_SEQ = (1 << 63) - 1

_bearer = HTTPBearer(auto_error=False, description="device API token or admin token")


def get_services(request: Request) -> Services:
    """The app's services (set by its lifespan)."""
    services: Services | None = getattr(request.app.state, "services", None)
    if services is None:
        raise UnavailableError("the server is starting")
    return services


ServicesDep = Annotated[Services, Depends(get_services)]
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
DevicePath = Annotated[str, Path(pattern=DEVICE_PATTERN, description="device id")]
SeqPath = Annotated[int, Path(ge=0, le=MAX_SEQ, description="record seq")]


def _token(credentials: HTTPAuthorizationCredentials | None) -> str:
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise UnauthorizedError("a bearer token is required")
    return credentials.credentials


async def require_admin(services: ServicesDep, credentials: Credentials) -> None:
    """Only the administrator."""
    token = _token(credentials)
    if not hmac.compare_digest(token.encode(), services.admin_token.encode()):
        raise UnauthorizedError("not the administrator token")


async def require_device(
    services: ServicesDep, credentials: Credentials, device: DevicePath
) -> models.Device:
    """The device named in the path, authenticated by its own API token."""
    token = _token(credentials)
    row = await services.registry.device_of_token(token)
    if row is None:
        raise UnauthorizedError("unknown API token")
    if row.id != device:
        raise ForbiddenError(f"this token belongs to {row.id}, not {device}")
    return row


async def require_device_or_admin(
    services: ServicesDep, credentials: Credentials, device: DevicePath
) -> None:
    """The device itself, or the administrator."""
    token = _token(credentials)
    if hmac.compare_digest(token.encode(), services.admin_token.encode()):
        return
    row = await services.registry.device_of_token(token)
    if row is None:
        raise UnauthorizedError("unknown API token")
    if row.id != device:
        raise ForbiddenError(f"this token belongs to {row.id}, not {device}")


AdminDep = Annotated[None, Depends(require_admin)]
DeviceDep = Annotated[models.Device, Depends(require_device)]
DeviceOrAdminDep = Annotated[None, Depends(require_device_or_admin)]
