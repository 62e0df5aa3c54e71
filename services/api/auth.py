"""Access control of the HTTP API: bearer tokens from the configuration, each with roles.

- ``reader``: the queries (tickets, customers, billing, timelines), and
  ``/metrics``, ``/healthz``, ``/readyz`` when ``SLATRACK_METRICS_PUBLIC=false``;
- ``publisher``: the intake, ``POST /v1/events``;
- ``admin``: ``/v1/admin/*`` (the rebuild).

Roles do not imply one another: give a token every role it needs.

A token may be **limited to customers** (``"customers": ["ACME", ...]`` in its
configuration; :class:`Principal.customers`, :meth:`Principal.sees`). It may hold only
the ``reader`` and ``publisher`` roles (the configuration is refused otherwise), and:

- as a reader it sees only those customers' tickets, timelines, customers and billing,
  ``?as_of=`` recomputations included: anything of another customer is answered
  exactly as an id that does not exist (404, the same body), and lists hold only its
  customers' tickets, filtered in the store's query (a ``customer_id`` filter of
  another customer lists nothing, as one that does not exist; a cursor only places a
  page). The pieces every query endpoint uses are in :mod:`services.api.scope`;
- as a publisher, ``POST /v1/events`` refuses the whole request (403, the offending
  items by their index only, nothing sent) if an event is of another customer;
- ``/v1/admin/*`` and ``/metrics`` are a 403 for it, whatever its roles (the
  operations about every customer: ``require(..., every_customer=True)`` and
  :data:`refuse_scoped_tokens` for ``/metrics`` when it is public), and so are
  ``/healthz`` and ``/readyz`` when they need a token (public, they answer anyone).

A token without ``customers``, and every request of the open API, sees every customer.

A presented token is compared with every configured one, each time all of
them, in constant time (``hmac.compare_digest`` of SHA-256 digests, so the
lengths compared are equal too): neither the time taken nor an early exit
tells which token matched or how much of one. Tokens are never logged; the
name of the token that was used is (at debug level).

With no token configured the API is open (development): every request has
every role. ``slatrack serve`` then refuses to listen on anything but a
loopback address unless given ``--insecure``.

Errors are JSON ``{"error": ..., "detail": ...}``: 401 (no token, or an
unknown one; with ``WWW-Authenticate: Bearer``) and 403 (a known token
without the role, or limited to customers where that is not allowed).
"""

import hashlib
import hmac
import logging
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from pydantic import BaseModel, Field

from services.api.state import api_state
from services.config import ROLES, SCOPED_ROLES, ApiToken, Role

log = logging.getLogger(__name__)

SCHEME = "bearerAuth"
REALM = "slatrack"

bearer = HTTPBearer(
    auto_error=False,
    scheme_name=SCHEME,
    description="A token from SLATRACK_API_TOKENS / SLATRACK_API_TOKENS_FILE: "
    "`Authorization: Bearer <token>`. Roles: reader (queries), publisher (intake), admin (rebuild).",
)


class ErrorBody(BaseModel):
    """Every error the API answers (a 422 of request validation also lists ``errors``)."""

    error: str = Field(description="A stable code, e.g. unauthorized, forbidden, not_found, invalid_request")
    detail: str = Field(description="What went wrong, for a person")
    errors: list[dict[str, Any]] | None = Field(
        None, description="With invalid_request: each invalid parameter (loc, msg, type)"
    )


class ApiError(HTTPException):
    """An HTTP error answered as ``{"error": error, "detail": detail}``."""

    def __init__(self, status: int, error: str, detail: str, headers: dict[str, str] | None = None):
        super().__init__(status, detail, headers)
        self.error = error


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request is from: a configured token's name, its roles, and its customers.

    ``customers`` is None for a principal that sees every customer (an unscoped token, or
    anyone when the API is open), else the only customers whose data it may read or publish.
    """

    name: str
    roles: frozenset[Role]
    customers: frozenset[str] | None = None

    @property
    def scoped(self) -> bool:
        """Limited to some customers."""
        return self.customers is not None

    def sees(self, customer_id: str) -> bool:
        """May read (and, as a publisher, write) this customer's data."""
        return self.customers is None or customer_id in self.customers


ANONYMOUS = Principal("anonymous", frozenset(ROLES))


class Authenticator:
    """Knows the configured tokens (by digest only) and who presents which."""

    def __init__(self, tokens: list[ApiToken]):
        self._known = [
            (_digest(t.token.get_secret_value()), Principal(t.name, frozenset(t.roles), t.customers))
            for t in tokens
        ]

    @property
    def open(self) -> bool:
        """No token configured: every request has every role."""
        return not self._known

    @property
    def names(self) -> list[str]:
        return [principal.name for _, principal in self._known]

    def identify(self, presented: str) -> Principal | None:
        """The holder of ``presented``, or None. Compares with every token, in constant time."""
        digest = _digest(presented)
        found: Principal | None = None
        for known, principal in self._known:
            # No break: every token is compared whatever matched before.
            if hmac.compare_digest(digest, known):
                found = principal
        return found

    def __repr__(self) -> str:
        return f"Authenticator(tokens={self.names!r})"


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def unauthorized(detail: str, invalid: bool = False) -> ApiError:
    challenge = f'Bearer realm="{REALM}"' + (', error="invalid_token"' if invalid else "")
    return ApiError(401, "unauthorized", detail, {"WWW-Authenticate": challenge})


def require(role: Role, *, every_customer: bool = False) -> Any:
    """A dependency: the request must carry a token with ``role`` (see the module docstring); its
    value is the :class:`Principal`. ``every_customer``: the operation is about the whole service
    (metrics, health), so a token limited to customers is refused (403) whatever its roles; so is
    it for a role it may not hold (admin).

    Use one object per role for every dependency of a request (FastAPI then checks once):
    :data:`services.api.scope.READER` for the queries.
    """

    async def check(
        request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]
    ) -> Principal:
        authenticator = api_state(request.app).auth
        if authenticator.open:
            return ANONYMOUS
        if credentials is None:
            raise unauthorized("send a bearer token: Authorization: Bearer <token>")
        principal = authenticator.identify(credentials.credentials)
        if principal is None:
            raise unauthorized("the bearer token is not known", invalid=True)
        if role not in principal.roles:
            raise ApiError(403, "forbidden", f"the token {principal.name!r} lacks the role {role!r}")
        if principal.scoped and (every_customer or role not in SCOPED_ROLES):
            raise _limited(principal)
        log.debug("%s %s as %s", request.method, request.url.path, principal.name)
        return principal

    return Depends(check)


async def _refuse_scoped_tokens(request: Request) -> None:
    # The header read by hand: the operation stays public in the OpenAPI document (no security).
    authenticator = api_state(request.app).auth
    scheme, presented = get_authorization_scheme_param(request.headers.get("authorization"))
    if authenticator.open or scheme.lower() != "bearer" or not presented:
        return
    principal = authenticator.identify(presented)
    if principal is not None and principal.scoped:
        raise _limited(principal)


refuse_scoped_tokens = Depends(_refuse_scoped_tokens)
"""For an operation open to anyone that a token limited to customers must not get all the same
(``/metrics`` when public: a customer's portal that passes requests on with its token must not
pass that one on). Any other request, with or without a token, is let through as before."""


def _limited(principal: Principal) -> ApiError:
    return ApiError(
        403,
        "forbidden",
        f"the token {principal.name!r} is limited to customers; this operation is for tokens that see "
        "every customer",
    )


def error(description: str) -> dict[str, Any]:
    """An OpenAPI response of the error shape."""
    return {"model": ErrorBody, "description": description}


AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: error("No bearer token, or an unknown one (with `WWW-Authenticate: Bearer`)"),
    403: error(
        "The token lacks the role this operation needs (or is limited to customers, and the operation "
        "is about every customer)"
    ),
}
