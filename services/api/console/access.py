"""Who a console page is for: the token of the sign-in cookie, checked as the API checks a bearer
token (:class:`services.api.auth.Authenticator`, constant time), with the reader role.

The cookie holds the token itself, base64url-encoded (a token may hold any character; a cookie
only some), as the console keeps no session state (any API process of a deployment answers any
page): ``HttpOnly`` (no script reads it), ``SameSite=Strict`` (no other site's page makes the
browser send it), ``Path=/ui``, ``Secure`` when the request came over HTTPS (behind a TLS proxy:
uvicorn's ``--forwarded-allow-ips``/``FORWARDED_ALLOW_IPS`` must name it, README, Operations).
The token is never put in a URL nor logged. With no token configured the console is
open, as the API is (``slatrack serve`` then listens on loopback only).
"""

import base64
import binascii
from urllib.parse import parse_qs, urlsplit

from fastapi import Request

from services.api.auth import ANONYMOUS, Principal
from services.api.state import api_state

COOKIE = "slatrack_console"
MAX_TOKEN = 4096
MAX_FORM_BYTES = 8192


class SignInNeeded(Exception):
    """No valid sign-in cookie: the page answers a redirect to the sign-in page."""


class NotAllowed(Exception):
    """A signed-in token without the reader role."""

    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


def identify(request: Request, token: str | None) -> Principal | None:
    """The holder of ``token`` (None: unknown, or none given); anyone when the API is open."""
    authenticator = api_state(request.app).auth
    if authenticator.open:
        return ANONYMOUS
    if not token or len(token) > MAX_TOKEN:
        return None
    return authenticator.identify(token)


def cookie_value(token: str) -> str:
    """The cookie's value for ``token``: base64url of its UTF-8, without padding."""
    return base64.urlsafe_b64encode(token.encode("utf-8", "surrogatepass")).decode().rstrip("=")


def cookie_token(value: str | None) -> str | None:
    """The token a cookie value holds (None: none, or not one of ours)."""
    if not value or len(value) > 2 * MAX_TOKEN:
        return None
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode("utf-8", "surrogatepass")
    except (binascii.Error, ValueError):
        return None


async def console_reader(request: Request) -> Principal:
    """The dependency of every page: the signed-in principal, with the reader role."""
    principal = identify(request, cookie_token(request.cookies.get(COOKIE)))
    if principal is None:
        raise SignInNeeded()
    if "reader" not in principal.roles:
        raise NotAllowed(principal.name)
    return principal


def same_origin(request: Request) -> bool:
    """A form post from one of our own pages: its Origin (or, without one, its Referer) is this
    host, as the request names it (Host) or a reverse proxy in front does (X-Forwarded-Host).
    Refuses a sign-in or sign-out posted from another site (CSRF), on top of SameSite: a browser's
    cross-site form post carries the other site's Origin and cannot set either header."""
    origin = request.headers.get("origin") or request.headers.get("referer")
    if origin is None:
        return True  # no browser sends a cross-site form post without either
    parts = urlsplit(origin)
    forwarded = (request.headers.get("x-forwarded-host") or "").split(",")[0].strip()
    hosts = {request.headers.get("host"), forwarded or None} - {None}
    return parts.scheme in ("http", "https") and parts.netloc in hosts


async def form_token(request: Request) -> str | None:
    """The ``token`` field of an ``application/x-www-form-urlencoded`` sign-in post."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        return None
    try:
        values = parse_qs(body.decode("utf-8", "replace"), max_num_fields=4)
    except ValueError:  # more fields than a sign-in form has
        return None
    tokens = values.get("token") or [""]
    return tokens[0].strip() or None


def cookie_options(request: Request) -> dict[str, object]:
    return {
        "key": COOKIE,
        "httponly": True,
        "samesite": "strict",
        "path": "/ui",
        "secure": request.url.scheme == "https",
    }
