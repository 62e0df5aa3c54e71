"""Ids in the console's paths: ``/ui/customers/{customer}/tickets/{ticket}`` holds any id the event
contract accepts, ``/`` included (percent-encoded, ``%2F``).

Starlette routes on the decoded path, where an encoded slash would cut the segment in two (and the
link would reach no page). :class:`ConsolePaths` routes the console's requests on their raw path
instead: each segment decoded on its own, a slash inside it kept as NUL, which no id holds (the
contract's ids are printable); the ``id`` convertor of the routes gives it back. (An id of ``.``
or ``..`` stays out of reach: browsers resolve those segments, encoded or not, before sending.)
"""

from urllib.parse import unquote

from starlette.convertors import Convertor, register_url_convertor
from starlette.types import ASGIApp, Receive, Scope, Send

SLASH = "\x00"  # a "/" inside one segment, until the route's convertor


class IdConvertor(Convertor[str]):
    regex = "[^/]+"

    def convert(self, value: str) -> str:
        return value.replace(SLASH, "/")

    def to_string(self, value: str) -> str:
        return value.replace("/", SLASH)


register_url_convertor("id", IdConvertor())


class ConsolePaths:
    """ASGI middleware: a ``/ui/`` request is routed on its raw path, segment by segment."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = scope.get("raw_path") if scope["type"] == "http" else None
        if raw and scope.get("path", "").startswith("/ui/"):
            segments = raw.decode("latin-1").split("/")
            path = "/".join(unquote(segment).replace("/", SLASH) for segment in segments)
            scope = {**scope, "path": path}
        await self.app(scope, receive, send)
