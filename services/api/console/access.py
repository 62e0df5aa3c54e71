"""Who a console page is for: the token of the sign-in cookie, checked as the API checks a bearer
token (:class:`services.api.auth.Authenticator`, constant time), with the reader role.

The cookie holds the token itself (the console keeps no session state, so any API process of a
deployment answers any page): ``HttpOnly`` (no script reads it), ``SameSite=Strict`` (no other
site's page makes the browser send it), ``Path=/ui``, ``Secure`` when the request came over
HTTPS. The token is never put in a URL nor logged. With no token configured the console is
open, as the API is (``slatrack serve`` then listens on loopback only).
"""

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


async def console_reader(request: Request) -> Principal:
    """The dependency of every page: the signed-in principal, with the reader role."""
    principal = identify(request, request.cookies.get(COOKIE))
    if principal is None:
        raise SignInNeeded()
    if "reader" not in principal.roles:
        raise NotAllowed(principal.name)
    return principal


def same_origin(request: Request) -> bool:
    """A form post from one of our own pages: its Origin (or, without one, its Referer) is this
    host. Refuses a sign-in posted from another site (login CSRF), on top of SameSite."""
    origin = request.headers.get("origin") or request.headers.get("referer")
    if origin is None:
        return True  # no browser sends a cross-site form post without either
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and parts.netloc == request.headers.get("host")


async def form_token(request: Request) -> str | None:
    """The ``token`` field of an ``application/x-www-form-urlencoded`` sign-in post."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        return None
    values = parse_qs(body.decode("utf-8", "replace"), max_num_fields=4)
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
