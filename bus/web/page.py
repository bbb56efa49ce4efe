"""The live page of the city's data flows: ``/`` (one HTML page), ``/graph.svg`` (the
topology drawn by :func:`bus.topology.graph.render_svg`) and ``/api/state`` (JSON).

The page shows lag per consumer stream (a group on a topic: the router on each canonical
topic, each sink connector on its subscription's topic) with a chart of the last hour,
dead letters per connector and for the router, connector health and camera availability, and
the figures the city runs on (:mod:`bus.ops.figures`: sharing, the maintenance promise,
throughput and latency, counted from the topics; docs/figures.md).
Everything is served from this process: the script and the style sheet are package data
inlined into the page, so the page works on a city network that reaches no internet.

The data comes from a :class:`bus.web.state.StateProvider`, so that ``bus web`` can poll a
cluster on its own (:class:`bus.web.cluster.ClusterProvider`) while ``bus up`` hands over its
in-process view.

Bound to 127.0.0.1 by default. Bound anywhere else it refuses to start without a token
(``BUS_WEB_TOKEN``); every request then needs ``Authorization: Bearer <token>`` or the
cookie that opening ``/?token=<token>`` once sets (what Jupyter does, since a browser
cannot add a header to the address it is given).
"""

from __future__ import annotations

import html
import hmac
from dataclasses import dataclass, field
from importlib import resources

import structlog
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from bus.topology.graph import render_svg
from bus.topology.models import Topology
from bus.serving import ThreadedServer
from bus.web.state import DEFAULT_INTERVAL_S, StateProvider

log = structlog.get_logger(__name__)

TOKEN_COOKIE = "bus_web_token"



# -- the app -------------------------------------------------------------------------------------------


def render_page(topology: Topology, refresh_s: float) -> str:
    """The HTML page: graph inline (so it can be coloured by status), style and script inlined."""
    static = resources.files("bus.web") / "static"
    template = (static / "page.html").read_text(encoding="utf-8")
    title = f"{topology.city.name}: data flows"
    replacements = {
        "<!--TITLE-->": _escape(title),
        "<!--REFRESH_MS-->": str(int(refresh_s * 1000)),
        "<!--NAMESPACE-->": _escape(topology.namespace or ""),
        "<!--GRAPH-->": render_svg(topology),
        "/*STYLE*/": (static / "page.css").read_text(encoding="utf-8"),
        "/*SCRIPT*/": (static / "page.js").read_text(encoding="utf-8"),
    }
    for marker, value in replacements.items():
        template = template.replace(marker, value)
    return template


def _escape(text: str) -> str:
    return html.escape(text, quote=True)


def create_page_app(
    topology: Topology, provider: StateProvider, *, token: str | None = None, refresh_s: float = DEFAULT_INTERVAL_S
) -> Starlette:
    page = render_page(topology, refresh_s)
    graph = render_svg(topology)

    def authorised(request: Request) -> bool:
        if token is None:
            return True
        expected = token.encode()
        header = request.headers.get("authorization", "").encode()
        cookie = request.cookies.get(TOKEN_COOKIE, "").encode()
        return hmac.compare_digest(header, b"Bearer " + expected) or hmac.compare_digest(cookie, expected)

    def refused() -> Response:
        return JSONResponse(
            {"error": "send Authorization: Bearer <BUS_WEB_TOKEN>, or open /?token=<BUS_WEB_TOKEN> once"},
            status_code=401,
        )

    async def index(request: Request) -> Response:
        given = request.query_params.get("token")
        if token is not None and given is not None and hmac.compare_digest(given.encode(), token.encode()):
            answer = RedirectResponse("/", status_code=303)  # the token leaves the address bar and history
            answer.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict")
            return answer
        if not authorised(request):
            return refused()
        return HTMLResponse(page, headers={"Content-Security-Policy": _CSP, "Cache-Control": "no-store"})

    async def graph_svg(request: Request) -> Response:
        if not authorised(request):
            return refused()
        return Response(graph, media_type="image/svg+xml")

    async def api_state(request: Request) -> Response:
        if not authorised(request):
            return refused()
        return JSONResponse(provider.state().model_dump(mode="json"), headers={"Cache-Control": "no-store"})

    return Starlette(routes=[Route("/", index), Route("/graph.svg", graph_svg), Route("/api/state", api_state)])


#: Nothing from elsewhere: the browser itself refuses any asset not served by this process.
_CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; "
    "img-src 'self' data:"
)


@dataclass
class PageServer:
    """The page served from a background thread (``bus web``, and ``bus up``)."""

    topology: Topology
    provider: StateProvider
    host: str = "127.0.0.1"
    port: int = 0
    token: str | None = None
    refresh_s: float = DEFAULT_INTERVAL_S
    _serving: ThreadedServer = field(init=False, repr=False)

    def __post_init__(self) -> None:
        app = create_page_app(self.topology, self.provider, token=self.token, refresh_s=self.refresh_s)
        self._serving = ThreadedServer(app, host=self.host, port=self.port, what="page", token=self.token)

    @property
    def url(self) -> str:
        return self._serving.url

    def start(self, timeout_s: float = 10.0) -> "PageServer":
        self._serving.start(timeout_s)
        self.port = self._serving.port
        log.info("page serving", url=self.url, access="bearer or cookie" if self.token else "open (loopback)")
        return self

    def stop(self) -> None:
        self._serving.stop()

    def __enter__(self) -> "PageServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
