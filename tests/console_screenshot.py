"""Write the docs' screenshot of the console's ticket page: docs/images/console-ticket.png.

``.venv/bin/python -m tests.console_screenshot [OUT.png [HEIGHT]]``: the page of the explain tests' story
(acme's T-1: a suspension, priority changes, a pending stretch, breaches, a close) served over a
SQLite store filled by the projector (tests.feed), saved with its stylesheet beside it, and shot
with headless Chromium (``chromium`` on the PATH, or SLATRACK_CHROMIUM).
"""

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

import httpx
from pydantic import SecretStr

from projections.policy import default_policy
from services.api.app import create_app
from services.api.console.access import COOKIE
from services.bootstrap import Services
from services.config import Settings
from services.kafka.publisher import EventPublisher
from tests.feed import Feed, a_store
from tests.unit.test_explain import everything

TOKEN = "screenshot-reader"
PAGE = "/ui/customers/acme/tickets/T-1"


async def page_html(data: Path) -> str:
    with a_store("sqlite", data) as store:
        feed = await Feed(store, datetime(2026, 11, 13, 17, 0, tzinfo=UTC)).open()
        await feed.send(*everything().dicts)
        tokens = [{"name": "auditor", "token": TOKEN, "roles": ["reader"]}]
        settings = Settings(data_dir=data, api_tokens=SecretStr(json.dumps(tokens)))
        app = create_app(Services(settings, default_policy(), EventPublisher(settings), store))
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://console") as client:
            response = await client.get(PAGE, headers={"cookie": f"{COOKIE}={TOKEN}"})
            response.raise_for_status()
            return response.text


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/images/console-ticket.png").resolve()
    height = sys.argv[2] if len(sys.argv) > 2 else "2200"
    browser = os.environ.get("SLATRACK_CHROMIUM") or shutil.which("chromium") or "chromium"
    with tempfile.TemporaryDirectory() as work:
        root = Path(work)
        html = asyncio.run(page_html(root))
        css = resources.files("services.api.console").joinpath("static", "console.css").read_bytes()
        (root / "console.css").write_bytes(css)
        html = html.replace('href="/ui/static/console.css"', 'href="console.css"')
        html = html.replace('<script src="/ui/static/console.js" defer></script>', "")
        (root / "page.html").write_text(html)
        out.parent.mkdir(parents=True, exist_ok=True)
        command = [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--window-size=1280,{height}",
            f"--screenshot={out}",
            (root / "page.html").as_uri(),
        ]
        subprocess.run(command, check=True, capture_output=True, timeout=120)
    print(out)


if __name__ == "__main__":
    main()
