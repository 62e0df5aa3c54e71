"""The console's routes (``/ui/...``), each a page over the read models, for the signed-in
principal (:func:`services.api.console.access.console_reader`).

Pages read the store with the query API's own helpers (:mod:`services.api.queries`): the same
active generation, the same store-call timeout and 503s, the same scoping of a token limited to
customers (:func:`services.api.scope.visible_tickets`; another customer's page is the 404 of one
that does not exist).
"""

from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import RedirectResponse, Response

from services.api.auth import Principal
from services.api.console import customers, ticket_page
from services.api.console.access import (
    COOKIE,
    NotAllowed,
    SignInNeeded,
    console_reader,
    cookie_options,
    form_token,
    identify,
    same_origin,
)
from services.api.console.render import page, static

router = APIRouter(prefix="/ui", include_in_schema=False)
Viewer = Annotated[Principal, Depends(console_reader)]


def install(app: FastAPI) -> None:
    """Serve the console at /ui/ on ``app`` (an API process with read models)."""
    app.include_router(router)
    app.include_router(customers.router)  # the customer pages (services.api.console.customers)
    app.include_router(ticket_page.router)  # a ticket's page (services.api.console.ticket_page)

    @app.exception_handler(SignInNeeded)
    async def sign_in_needed(request: Request, exc: SignInNeeded) -> Response:
        return RedirectResponse("/ui/sign-in", status_code=303)

    @app.exception_handler(NotAllowed)
    async def not_allowed(request: Request, exc: NotAllowed) -> Response:
        message = f"The token {exc.name!r} lacks the reader role the console needs."
        return page(request, "error.html", 403, title="Not allowed", message=message, principal=None)

    @app.get("/ui", include_in_schema=False)
    async def ui_root() -> Response:  # a fixed path, not built from the Host header
        return RedirectResponse("/ui/", status_code=308)


@router.get("/static/{name}")
async def static_file(name: str) -> Response:
    return static(name)


@router.get("/sign-in")
async def sign_in_form(request: Request) -> Response:
    return page(request, "sign_in.html", title="Sign in", message=None, principal=None)


@router.post("/sign-in")
async def sign_in(request: Request) -> Response:
    if not same_origin(request):
        message = "Sign in from this console's own page."
        return page(request, "sign_in.html", 403, title="Sign in", message=message, principal=None)
    token = await form_token(request)
    principal = identify(request, token)
    if principal is None or token is None:
        message = "That token is not known."
        return page(request, "sign_in.html", 401, title="Sign in", message=message, principal=None)
    if "reader" not in principal.roles:
        message = f"The token {principal.name!r} lacks the reader role the console needs."
        return page(request, "sign_in.html", 403, title="Sign in", message=message, principal=None)
    response = RedirectResponse("/ui/", status_code=303)
    response.set_cookie(value=token, **cookie_options(request))  # type: ignore[arg-type]
    return response


@router.post("/sign-out")
async def sign_out(request: Request) -> Response:
    response = RedirectResponse("/ui/sign-in", status_code=303)
    options = cookie_options(request)
    response.delete_cookie(
        COOKIE, path="/ui", secure=bool(options["secure"]), httponly=True, samesite="strict"
    )
    return response


@router.get("/")
async def queue(request: Request, principal: Viewer) -> Response:
    """The queue: open tickets by their next breach (built on the list query)."""
    return page(request, "queue.html", title="Queue", principal=principal)
