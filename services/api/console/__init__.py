"""The web console at ``/ui/``: read-only pages for people, over the same read models, tokens
and roles as the query API (issue 15).

- :mod:`.access`: signing in (the token kept in an HttpOnly, SameSite=Strict cookie; never in a
  URL or a log) and the principal of a page request (the reader role; a token limited to
  customers sees only theirs, exactly as in the API);
- :mod:`.render`: the Jinja2 environment, the pages' security headers, the static files;
- :mod:`.pages`: the routes: the queue (``/ui/``), a ticket, the customers and a customer's month.

Server-rendered HTML and SVG, plain CSS, one small script (live countdowns); no build step, no
external asset.
"""

from services.api.console.pages import install

__all__ = ["install"]
