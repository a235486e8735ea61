"""Export bundles over HTTP as a streamed zip (administrator).

``POST /api/v1/admin/exports/zip`` writes the bundle an :class:`ExportRequest` asks for into
a staging folder under ``{data}/exports`` (records a page at a time, media one file at a
time), then streams it as a zip and removes the staging folder when the stream ends or is
abandoned. ``GET /api/v1/admin/exports/{name}.zip`` streams a bundle written earlier by
``POST /api/v1/admin/exports``. Memory stays flat: one file block at a time.
"""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter
from fastapi import Path as PathParam
from fastapi.responses import StreamingResponse

from protocol.api import API_PREFIX
from protocol.layout import MANIFEST_FILE
from server.deps import AdminDep, ServicesDep
from server.errors import NotFoundError
from server.routers.problems import PROBLEMS
from server.schemas import ExportRequest
from server.zipstream import zip_chunks

ZIP = "application/zip"
NamePath = Annotated[
    str, PathParam(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$", description="export name")
]
_ZIP_RESPONSE: dict[int | str, dict[str, object]] = {
    200: {"content": {ZIP: {}}, "description": "the bundle as a zip, streamed"}
}


def _staged(folder: Path) -> Iterator[bytes]:
    """Stream ``folder`` as a zip, then remove it (also when the client goes away)."""
    try:
        yield from zip_chunks(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _attachment(name: str) -> dict[str, str]:
    return {"content-disposition": f'attachment; filename="{name}.zip"'}


def router() -> APIRouter:
    """The streamed export routes."""
    api = APIRouter(prefix=f"{API_PREFIX}/admin/exports", tags=["admin"], responses=PROBLEMS)

    @api.post("/zip", response_class=StreamingResponse, responses=_ZIP_RESPONSE)
    async def export_zip(
        request: ExportRequest, services: ServicesDep, _: AdminDep
    ) -> StreamingResponse:
        """Export and stream the bundle as a zip (verify it with ``unbroken verify``)."""
        staging = services.settings.data / "exports" / f".zip-{secrets.token_hex(8)}"
        try:
            await services.exporter.export(request, staging)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        name = request.name or f"unbroken-{request.device or 'incident'}"
        return StreamingResponse(_staged(staging), media_type=ZIP, headers=_attachment(name))

    @api.get("/{name}.zip", response_class=StreamingResponse, responses=_ZIP_RESPONSE)
    async def stored_zip(name: NamePath, services: ServicesDep, _: AdminDep) -> StreamingResponse:
        """Stream a bundle written earlier under the data directory as a zip."""
        folder = services.settings.data / "exports" / name
        if not (folder / MANIFEST_FILE).is_file():
            raise NotFoundError(f"no finished export named {name!r}")
        return StreamingResponse(zip_chunks(folder), media_type=ZIP, headers=_attachment(name))

    return api
