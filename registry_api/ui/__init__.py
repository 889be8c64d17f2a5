"""The monitoring dashboard: static pages under /ui that read the stats API from the browser.

No SQL and no templates here: the pages are HTML, CSS and JavaScript shipped with agentmon
(charts are SVG drawn by our own script; nothing is fetched from a CDN, so the pages work
offline). The server only tells a page whether writes need an API key.
"""

from __future__ import annotations

import html
from functools import cache
from importlib import resources

from fastapi import APIRouter, Depends, FastAPI
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from agentmon.config import Settings
from registry_api.deps import get_settings

router = APIRouter(include_in_schema=False)
STATIC = resources.files("registry_api.ui").joinpath("static")


@cache
def _page(name: str) -> str:
    return STATIC.joinpath(name).read_text()


def _render(name: str, settings: Settings) -> HTMLResponse:
    key_required = "true" if settings.api_key_value is not None else "false"
    body = _page(name).replace("{{write_key_required}}", html.escape(key_required))
    return HTMLResponse(body, headers={"Cache-Control": "no-cache"})


@router.get("/", response_class=RedirectResponse)
def root() -> RedirectResponse:
    return RedirectResponse("/ui")


@router.get("/ui", response_class=HTMLResponse)
def overview(settings: Settings = Depends(get_settings)) -> HTMLResponse:
    return _render("overview.html", settings)


@router.get("/ui/agents/{agent_id}", response_class=HTMLResponse)
def agent_detail(agent_id: str, settings: Settings = Depends(get_settings)) -> HTMLResponse:
    # The page reads the id from its own address; unknown agents get the page's not-found state.
    return _render("agent.html", settings)


def install(app: FastAPI) -> None:
    app.include_router(router)
    app.mount("/ui/static", StaticFiles(directory=str(STATIC)), name="ui-static")
