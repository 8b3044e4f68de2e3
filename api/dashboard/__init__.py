"""The web dashboard at /ui: static pages that read the API (and its watch stream) from the
browser, with the token the user gives them (kept in the browser's local storage)."""

from __future__ import annotations

from importlib.resources import files

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

router = APIRouter(include_in_schema=False)
_FILES = files(__package__)


def _page(name: str) -> HTMLResponse:
    return HTMLResponse(_FILES.joinpath(name).read_text(encoding="utf-8"), headers={"Cache-Control": "no-cache"})


@router.get("/ui")
def deployments_page() -> HTMLResponse:
    return _page("index.html")


@router.get("/ui/deployments/{name}")
def deployment_page(name: str) -> HTMLResponse:
    return _page("deployment.html")


@router.get("/ui/static/{asset}")
def asset(asset: str) -> Response:
    if asset not in ("dashboard.js", "dashboard.css"):
        return Response(status_code=404)
    media = "text/javascript" if asset.endswith(".js") else "text/css"
    return Response(_FILES.joinpath(asset).read_text(encoding="utf-8"), media_type=media, headers={"Cache-Control": "no-cache"})
