"""``GET /`` and ``GET /console``: the fleet console, one static page over the JSON API.

The page holds no data of its own: after sign-in with the admin token it polls
``/api/v1/fleet`` and ``/api/v1/fleet/alerts`` every two seconds.
"""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, RedirectResponse


def router() -> APIRouter:
    """The console routes (the page is public; the data behind it needs the admin token)."""
    api = APIRouter(tags=["console"], include_in_schema=False)
    page = (resources.files("server") / "console.html").read_text(encoding="utf-8")

    @api.get("/", response_class=RedirectResponse)
    async def root() -> RedirectResponse:
        return RedirectResponse("/console")

    @api.get("/console", response_class=HTMLResponse)
    async def console() -> HTMLResponse:
        return HTMLResponse(page)

    return api
