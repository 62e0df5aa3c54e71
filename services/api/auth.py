"""Access control of the HTTP API: bearer tokens from the configuration, each with roles.

- ``reader``: the queries (tickets, customers, billing, timelines), and
  ``/metrics``, ``/healthz``, ``/readyz`` when ``SLATRACK_METRICS_PUBLIC=false``;
- ``publisher``: the intake, ``POST /v1/events``;
- ``admin``: ``/v1/admin/*`` (the rebuild).

Roles do not imply one another: give a token every role it needs.

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
without the role).
"""

import hashlib
import hmac
import logging
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from services.api.state import api_state
from services.config import ROLES, ApiToken, Role

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
    name: str
    roles: frozenset[Role]


ANONYMOUS = Principal("anonymous", frozenset(ROLES))


class Authenticator:
    """Knows the configured tokens (by digest only) and who presents which."""

    def __init__(self, tokens: list[ApiToken]):
        self._known = [
            (_digest(t.token.get_secret_value()), Principal(t.name, frozenset(t.roles))) for t in tokens
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


def require(role: Role) -> Any:
    """A dependency: the request must carry a token with ``role`` (see the module docstring)."""

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
        log.debug("%s %s as %s", request.method, request.url.path, principal.name)
        return principal

    return Depends(check)


def error(description: str) -> dict[str, Any]:
    """An OpenAPI response of the error shape."""
    return {"model": ErrorBody, "description": description}


AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: error("No bearer token, or an unknown one (with `WWW-Authenticate: Bearer`)"),
    403: error("The token lacks the role this operation needs"),
}
