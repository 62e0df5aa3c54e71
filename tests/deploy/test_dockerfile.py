"""The Dockerfile, read (there is no Docker engine on our machines): multi-stage,
slim, non-root, `slatrack serve`, a health check on /healthz that works in an
image without curl."""

import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from services.kafka.embedded import free_port
from tests.deploy.helpers import DOCKERFILE, ROOT


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    logical, current = [], ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        text = line.strip()
        if not current and (not text or text.startswith("#")):
            continue
        if text.endswith("\\"):
            current += text.removesuffix("\\") + " "
        else:
            logical.append(current + text)
            current = ""
    return [(op.upper(), args.strip()) for op, _, args in (text.partition(" ") for text in logical)]


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last_from = max(i for i, (op, _) in enumerate(steps) if op == "FROM")
    return steps[last_from:]


def healthcheck_command() -> list[str]:
    (args,) = [args for op, args in final_stage() if op == "HEALTHCHECK"]
    return json.loads(args[args.index("CMD") + len("CMD") :].strip())


def test_multi_stage_slim_python_311():
    steps = instructions()
    froms = [args for op, args in steps if op == "FROM"]
    assert len(froms) == 2 and froms[0].endswith(" AS build")
    assert "ARG PYTHON_IMAGE=python:3.11-slim-bookworm" in [f"{op} {args}" for op, args in steps]
    assert froms[1] == "${PYTHON_IMAGE}"
    copies = [args for op, args in final_stage() if op == "COPY"]
    assert copies == ["--from=build /opt/slatrack /opt/slatrack"]  # no build tools, no sources


def test_runs_slatrack_serve_as_a_non_root_user():
    stage = dict(final_stage())  # the last of each instruction
    build_args = dict(args.split("=", 1) for op, args in final_stage() if op == "ARG")
    user = re.sub(r"\$\{(\w+)\}", lambda m: build_args[m.group(1)], stage["USER"]).split(":")[0]
    assert user.isdigit() and int(user) != 0  # numeric: a runtime can check it is not root
    assert json.loads(stage["ENTRYPOINT"]) == ["slatrack"]
    assert json.loads(stage["CMD"]) == ["serve"]
    assert stage["EXPOSE"] == "8000"
    env = stage["ENV"]
    for setting in ("SLATRACK_HTTP_HOST=0.0.0.0", "SLATRACK_HTTP_PORT=8000", "PATH=/opt/slatrack/bin:$PATH"):
        assert setting in env.split()


def test_copies_only_what_exists():
    for op, args in instructions():
        if op == "COPY" and not args.startswith("--from="):
            *sources, _ = args.split()
            for source in sources:
                assert (ROOT / source).exists(), source


class _Health(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def health_server(status: int) -> Iterator[int]:
    handler = type("Handler", (_Health,), {"status": status})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def run_healthcheck(port: int) -> int:
    command = healthcheck_command()
    assert command[0] == "python"  # the image's python; slim has no curl
    env = {**os.environ, "SLATRACK_HTTP_PORT": str(port)}
    return subprocess.run([sys.executable, *command[1:]], env=env, capture_output=True, timeout=30).returncode


def test_the_health_check_asks_healthz():
    with health_server(200) as port:
        assert run_healthcheck(port) == 0
    with health_server(503) as port:
        assert run_healthcheck(port) != 0
    assert run_healthcheck(free_port()) != 0  # nothing listening
