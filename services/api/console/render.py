"""The console's HTML: one Jinja2 environment (autoescaped), its filters, the headers every page
carries, and the static files (a fixed list, read once from the package)."""

from datetime import UTC, datetime
from importlib import resources
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import Request
from fastapi.responses import HTMLResponse, Response
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from projections.ticket import utc

# No inline script or style, nothing from elsewhere; forms post only here; never framed.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    # Not no-referrer: under it a browser sends `Origin: null` with the sign-in form's post, which
    # access.same_origin cannot tell from another site's. same-origin: our own origin to us only.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
}
STATIC = {"console.css": "text/css; charset=utf-8", "console.js": "text/javascript; charset=utf-8"}

environment = Environment(
    loader=PackageLoader("services.api.console", "templates"),
    autoescape=select_autoescape(default=True),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def utc_text(instant: datetime | None) -> str:
    """RFC 3339 in UTC, to the second (the API's form: projections.ticket.utc)."""
    return "" if instant is None else utc(instant.astimezone(UTC))


def local_text(instant: datetime | None, zone: str) -> str:
    """The instant in the policy's time zone, as a person reads it (with the zone's abbreviation)."""
    if instant is None:
        return ""
    return instant.astimezone(ZoneInfo(zone)).strftime("%a %Y-%m-%d %H:%M:%S %Z")


def duration_text(seconds: int | None) -> str:
    """``1d 2h 03m``, ``-45m 10s`` (overdue)."""
    if seconds is None:
        return ""
    sign, rest = ("-" if seconds < 0 else ""), abs(int(seconds))
    days, rest = divmod(rest, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{sign}{days}d {hours}h {minutes:02d}m"
    if hours:
        return f"{sign}{hours}h {minutes:02d}m"
    return f"{sign}{minutes}m {secs:02d}s"


def cents_text(cents: int) -> str:
    return f"{cents // 100:,}.{cents % 100:02d}" if cents >= 0 else "-" + cents_text(-cents)


environment.filters.update(utc=utc_text, local=local_text, duration=duration_text, cents=cents_text)


def page(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    """A page of the console: ``template`` rendered with ``context`` (and the request)."""
    body = environment.get_template(template).render(request=request, **context)
    return HTMLResponse(body, status_code=status, headers=HEADERS)


def _load(name: str) -> bytes:
    return resources.files("services.api.console").joinpath("static", name).read_bytes()


_FILES = {name: _load(name) for name in STATIC}


def static(name: str) -> Response:
    """One of the console's static files (404 for any other name)."""
    if name not in STATIC:
        return Response(b"not found", status_code=404, media_type="text/plain")
    headers = {"X-Content-Type-Options": "nosniff", "Cache-Control": "public, max-age=300"}
    return Response(_FILES[name], media_type=STATIC[name], headers=headers)
