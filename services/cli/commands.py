"""The ``slatrack`` command line."""

import asyncio
import dataclasses
import os
import re
import signal
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, TypeVar

import click
import orjson
from pydantic import ValidationError

from events import Event, EventRejected, RejectKind, decode_event
from events.schema import render as schema_text
from events.schema import schema_documents
from projections.timeline import parse_instant, whole_second
from services import logs
from services.cli import render
from services.config import (
    PROCESS_ROLES,
    ProcessRole,
    Settings,
    configuration_problem,
    settings_help,
    unknown_variables,
)
from services.runtime import tune_gc

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

    from events.policies import PolicyVersionPublished
    from projections.calendar import Calendar
    from projections.contracts import Contracts, PolicyVersion
    from projections.policy import Policy
    from projections.timeline import Recorded
    from services.kafka.dead_letters import DeadLetter
    from services.kafka.log_reader import EventFilter
    from services.store import ReadModelStore
    from services.worker.batches import PolicyRead
    from services.worker.rebuild import RebuildReport

T = TypeVar("T")

SCHEMA_DIR = Path("docs/schemas")
PUBLISH_CHUNK = 1000


class UserError(click.ClickException):
    """A user's mistake (the configuration, an input file): one line on stderr, exit status 2."""

    exit_code = 2


def _settings() -> Settings:
    """The configuration, checked: a warning for each SLATRACK_ variable that is no setting."""
    for warning in unknown_variables(os.environ):
        click.echo(f"warning: {warning}", err=True)
    try:
        return Settings()
    except ValidationError as exc:
        raise UserError(f"bad configuration: {configuration_problem(exc)}") from None


def _reads(*parts: str) -> str:
    """A command's epilog: the environment variables it reads (its parts of the Settings)."""
    if not parts:
        return "Reads no SLATRACK_ environment variable."
    return (
        "Environment variables it reads (every SLATRACK_ variable is checked at start; "
        "`slatrack serve --help` lists them all):\n\n\b\n" + settings_help(*parts)
    )


def _broker_wait(settings: Settings) -> float:
    """How long a command waits for the broker at start: the configured request timeout."""
    return settings.kafka_request_timeout_ms / 1000


def _logging(settings: Settings) -> None:
    logs.configure(settings.log_level)


@click.group()
def main() -> None:
    """slatrack: event-sourced SLA tracking for support desks."""
    tune_gc()  # every command: a worker, a rebuild and a replay alike hold many objects


@main.command(
    epilog="Environment variables it reads (every SLATRACK_ variable is checked at start):\n\n\b\n"
    + settings_help()
)
@click.option(
    "--role",
    type=click.Choice(PROCESS_ROLES),
    default="all",
    show_default=True,
    help="worker: consume, project, timers, signals; api: HTTP only; all: both.",
)
@click.option(
    "--insecure",
    is_flag=True,
    help="Serve the API with no token configured on a non-loopback address (open to anyone).",
)
def serve(role: ProcessRole, insecure: bool) -> None:
    """Project the event log into the read models and serve HTTP (intake, views, /metrics).

    With SLATRACK_KAFKA_BOOTSTRAP unset, an embedded broker is started on
    127.0.0.1 (memory only: for development, tests and demos). Ctrl-C or
    SIGTERM stops everything this command started. With no API token
    configured (SLATRACK_API_TOKENS), the API is open and listens only on a
    loopback address unless --insecure is given.
    """
    from services.kafka.client import BrokerUnreachable
    from services.serve import ServeFailed, ServeRefused, exposure_problem, run

    settings = _settings()
    problem = exposure_problem(settings, role, insecure)
    if problem is not None:
        raise click.UsageError(problem)
    _configured_policy(settings)

    def check() -> None:
        # Once the ports are known free, before anything starts: the read models' place, the
        # data dir (opening the store creates them, so not before a taken port is refused).
        _open_store(settings).close()
        if settings.uses_embedded_broker:
            _data_dir(settings)  # its output goes there

    _logging(settings)
    try:
        run(settings, role, check)
    except ServeRefused as exc:  # a taken port, a topic it cannot use: refused, said in one line
        click.echo(f"slatrack serve: {exc}", err=True)
        sys.exit(2)
    except ServeFailed:  # logged already, as one ERROR line
        sys.exit(1)
    except BrokerUnreachable as exc:
        raise click.ClickException(str(exc)) from None


@main.command(epilog=_reads("broker", "producer", "log", "topics", "create", "events", "dlq", "logging"))
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--skip-invalid", is_flag=True, help="Send the valid lines even if some are invalid.")
def publish(file: Path, skip_invalid: bool) -> None:
    """Validate every line of a JSONL FILE, then send the events to the log.

    Invalid lines are reported by number with the reason; unless
    --skip-invalid is given, nothing is sent when any line is invalid.
    With SLATRACK_KAFKA_BOOTSTRAP unset, the events go to the embedded
    broker of a running `slatrack serve`, at 127.0.0.1:SLATRACK_EMBEDDED_PORT.
    """
    settings = _settings()
    _logging(settings)
    valid, invalid = 0, 0
    for lineno, outcome in _read_events(file, settings.max_event_bytes):
        if isinstance(outcome, EventRejected):
            invalid += 1
            click.echo(f"{file}:{lineno}: {outcome.kind}: {outcome.detail}", err=True)
        else:
            valid += 1
    if invalid and not skip_invalid:
        click.echo(f"{invalid} invalid lines, {valid} valid: nothing sent (see --skip-invalid)", err=True)
        sys.exit(1)
    asyncio.run(_send(settings, file, valid))
    click.echo(
        f"published {valid} events to {settings.topic_events} at {settings.bootstrap()}; "
        f"{invalid} invalid lines skipped"
    )


async def _send(settings: Settings, file: Path, count: int) -> None:
    from services.kafka.client import ensure_topics
    from services.kafka.publisher import EventPublisher

    await _reachable(settings)
    await ensure_topics(settings)  # never let a producer auto-create the log with default settings
    async with EventPublisher(settings) as publisher:
        with click.progressbar(length=count, label="publishing", file=sys.stderr) as bar:
            chunk: list[Event] = []
            for _, outcome in _read_events(file, settings.max_event_bytes):
                if isinstance(outcome, EventRejected):
                    continue
                chunk.append(outcome)
                if len(chunk) == PUBLISH_CHUNK:
                    await publisher.publish(chunk)
                    bar.update(len(chunk))
                    chunk = []
            await publisher.publish(chunk)
            bar.update(len(chunk))


async def _reachable(settings: Settings) -> None:
    from services.kafka.client import BrokerUnreachable, wait_until_reachable

    try:
        await wait_until_reachable(settings, timeout=_broker_wait(settings))
    except BrokerUnreachable as exc:
        hint = " Is `slatrack serve` running?" if settings.uses_embedded_broker else ""
        raise click.ClickException(f"{exc}.{hint}") from None


def _read_events(file: Path, max_bytes: int) -> Iterator[tuple[int, Event | EventRejected]]:
    """Each non-blank line, decoded: (line number, event or why not). Streams: large files are fine.
    A policy event (an export's first lines) is not one: it is the policy topic's."""
    for lineno, line in _read_lines(file):
        if _is_policy_line(line):
            yield lineno, EventRejected(RejectKind.UNKNOWN_TYPE, POLICY_LINE)
        else:
            yield lineno, _decoded(line, max_bytes)


POLICY_LINE = (
    "a policy event (policy.version_published): it goes to the policy topic, with `slatrack policy "
    "publish`, not to the events topic"
)


def _read_lines(file: Path) -> Iterator[tuple[int, bytes]]:
    """Each non-blank line of a file, with its number (the first is 1), without its line break."""
    with open(file, "rb") as lines:
        for lineno, line in enumerate(lines, start=1):
            line = line.rstrip(b"\r\n")
            if line.strip():
                yield lineno, line


def _decoded(line: bytes, max_bytes: int) -> Event | EventRejected:
    try:
        return decode_event(line, max_bytes=max_bytes)
    except EventRejected as rejection:
        return rejection


def _is_policy_line(line: bytes) -> bool:
    """Whether a line of an export is a policy event (the type named, then checked: cheap for the
    many lines that are not)."""
    from events.policies import POLICY_EVENT_TYPE, is_policy_event

    return POLICY_EVENT_TYPE.encode() in line and is_policy_event(line)


@main.command(epilog=_reads("broker", "log", "batches", "events", "logging"))
@click.option(
    "--customer",
    metavar="ID",
    help="Only this customer's events (its tickets' and account's); the policy versions all the same.",
)
@click.option(
    "--since",
    metavar="TIME",
    help="RFC 3339 instant: only events that occurred at or after it. This drops the history that "
    "earlier events set up (open tickets, running clocks, unpaid invoices): a replay of a partial "
    "export is only as good as its start.",
)
@click.option("--until", metavar="TIME", help="RFC 3339 instant: only events that occurred at or before it.")
@click.option(
    "--out",
    metavar="FILE",
    default="-",
    show_default=True,
    type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
    help="Where to write; - is stdout. A file appears whole or not at all (written aside, then renamed).",
)
def export(customer: str | None, since: str | None, until: str | None, out: Path) -> None:
    """Write the event log as JSONL: the input of `replay --events` and `explain --events`.

    First every policy version of the policy topic (SLATRACK_TOPIC_POLICIES), as
    recorded, in the topic's order, whatever the filters: every number depends on
    them. Then the events: every partition of the events topic from its beginning
    up to its end as found at the start (events appended meanwhile wait for the
    next export), without joining the workers' consumer group. Each valid event
    is written as recorded, in the workers' recording order (offset, then
    partition). Invalid messages (those dead-lettered, and policy records that
    are no valid version) are reported on stderr with where they are and why,
    and not written. A progress bar and a summary go to stderr.
    """
    from services.kafka.log_reader import EventFilter, output_file

    settings = _settings()
    _logging(settings)
    keep = EventFilter(
        customer,
        _instant(since, "--since") if since is not None else None,
        _instant(until, "--until") if until is not None else None,
    )
    if keep.since is not None and keep.until is not None and keep.since > keep.until:
        raise click.BadParameter("is after --until", param_hint="--since")
    try:
        with output_file(None if str(out) == "-" else out) as sink:
            counts = asyncio.run(_export(settings, sink, keep))
    except OSError as exc:  # the output (Kafka's errors are dealt with in _export)
        raise click.ClickException(f"cannot write {out}: {exc}") from exc
    policies_invalid = (
        f", {counts['policies_invalid']} invalid (not written)" if counts["policies_invalid"] else ""
    )
    click.echo(
        f"exported {counts['written']} events from {settings.topic_events} to "
        f"{'stdout' if str(out) == '-' else out}; {counts['skipped']} skipped by the filter, "
        f"{counts['invalid']} invalid (not written); before them {counts['policies']} policy events "
        f"from {settings.topic_policies}{policies_invalid}",
        err=True,
    )


async def _export(settings: Settings, sink: BinaryIO, keep: "EventFilter") -> dict[str, int]:
    from contextlib import aclosing

    from aiokafka.errors import KafkaError

    from services.kafka.client import TopicProblem
    from services.kafka.log_reader import LogBounds, LogNotFound, jsonl_line, read_log
    from services.kafka.policies import read_policy_records
    from services.worker.batches import PolicyDecoder

    await _reachable(settings)
    counts = {"written": 0, "skipped": 0, "invalid": 0, "policies": 0, "policies_invalid": 0}
    try:
        policies = await read_policy_records(settings)
    except TopicProblem as exc:
        raise UserError(str(exc)) from None
    except KafkaError as exc:
        raise click.ClickException(
            f"reading the policy topic at {settings.bootstrap()} failed: {exc!r}"
        ) from exc
    read = PolicyDecoder().read(policies.records, policies.end)
    kept = {v.position for v in read.versions} | set(read.duplicates)  # copies too: the log as it is
    for offset, value in policies.records:
        if offset in kept:
            sink.write(jsonl_line(value) + b"\n")
            counts["policies"] += 1
    for offset, reason in read.rejected:
        counts["policies_invalid"] += 1
        click.echo(f"{settings.topic_policies} offset {offset}: {reason}", err=True)
    with click.progressbar(length=1, label="exporting", file=sys.stderr, update_min_steps=500) as bar:

        def bounds(found: LogBounds) -> None:
            bar.length = max(found.total, 1)

        try:
            async with aclosing(read_log(settings, bounds)) as records:
                async for record in records:
                    bar.update(1)
                    if record.event is None:
                        counts["invalid"] += 1
                        click.echo(f"{settings.topic_events} {record.where}: {record.reason}", err=True)
                    elif keep(record.event):
                        sink.write(jsonl_line(record.value) + b"\n")
                        counts["written"] += 1
                    else:
                        counts["skipped"] += 1
        except LogNotFound as exc:
            raise click.ClickException(str(exc)) from exc
        except KafkaError as exc:
            raise click.ClickException(f"reading the log at {settings.bootstrap()} failed: {exc!r}") from exc
    return counts


@main.command(epilog=_reads())
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), default=SCHEMA_DIR, show_default=True
)
@click.option("--check", is_flag=True, help="Do not write; fail if the files differ from the models.")
def schema(out: Path, check: bool) -> None:
    """Write the JSON Schema of every event type."""
    stale = schema_drift(out)
    if check:
        for name in stale:
            click.echo(f"{out / name}: differs from the models (run `slatrack schema`)", err=True)
        sys.exit(1 if stale else 0)
    out.mkdir(parents=True, exist_ok=True)
    for name, document in schema_documents().items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(schema_text(document), encoding="utf-8")
    for name in stale:
        if name not in schema_documents():
            (out / name).unlink()
    click.echo(f"wrote {len(schema_documents())} schemas to {out}")


def schema_drift(directory: Path) -> list[str]:
    """Names of schema files that are missing, stale, or no longer generated."""
    expected = {name: schema_text(doc) for name, doc in schema_documents().items()}
    files = directory.rglob("*.json") if directory.is_dir() else ()
    present = {p.relative_to(directory).as_posix() for p in files}  # signals/... included
    drift = [
        name
        for name, text in expected.items()
        if name not in present or (directory / name).read_text(encoding="utf-8") != text
    ]
    return sorted(drift + [name for name in present if name not in expected])


# --- operations: rebuild, demo --------------------------------------------------


@main.command(epilog=_reads("broker", "log", "batches", "rebuild", "events", "policy", "store", "logging"))
@click.option(
    "--no-switch", is_flag=True, help="Build and check the new generation, but keep the current one."
)
def rebuild(no_switch: bool) -> None:
    """Replay the log into a fresh generation of the read models, check it, switch to it.

    The new generation is computed with the configured policy (SLATRACK_POLICY_FILE)
    and keeps it; the current generation keeps serving meanwhile; workers follow
    the switch by themselves. Prints the counts and the check as JSON, with the
    live rows that were not the view their events give (the switch repairs
    them) and the seconds of each phase. SLATRACK_REBUILD_PROCESSES processes (default:
    one per core) read and project the partitions and check the tickets, each its share. On a
    difference in the rebuilt generation it is dropped, nothing
    switches and the exit status is 1. The policy topic is read in full first: every
    ticket is measured with its contract's version, as the workers do.
    """
    from services.kafka.log_reader import WholeLogReader
    from services.kafka.policies import KafkaPolicyLog
    from services.worker.rebuild import rebuild as run_rebuild

    async def rebuilt(progress: "Callable[[int, int], None]") -> "RebuildReport":
        async with KafkaPolicyLog(settings) as policies:
            return await run_rebuild(
                settings,
                store,
                policy,
                progress,
                not no_switch,
                log_source=WholeLogReader(settings),
                policy_log=policies,
                policy_topic=settings.topic_policies,
                open_store=open_store,
            )

    from services.store import open_store

    settings = _settings()
    policy = _configured_policy(settings)
    _logging(settings)
    store = _open_store(settings)
    try:
        with click.progressbar(length=1, label="rebuilding", file=sys.stderr) as bar:

            def progress(done: int, total: int) -> None:
                bar.length = max(total, 1)
                bar.update(done - bar.pos)

            report = asyncio.run(rebuilt(progress))
    finally:
        store.close()
    _emit(report.as_dict())
    if report.mismatches:
        raise click.ClickException(f"{len(report.mismatches)} differences: not switched, generation dropped")


@main.command(
    epilog=_reads("broker", "producer", "log", "topics", "create", "dlq", "policy", "http", "logging")
)
@click.option("--serve", "with_serve", is_flag=True, help="Start `slatrack serve` beside it (make demo).")
@click.option("--customers", default=300, show_default=True, help="Simulated customers.")
@click.option("--tickets", default=2000, show_default=True, help="Simulated tickets of the history.")
@click.option("--days", default=3, show_default=True, help="Days of history before now.")
@click.option("--live-every", default=30.0, show_default=True, help="Seconds between new tickets, live.")
@click.option("--seed", default=1, show_default=True, help="Same seed, same traffic.")
def demo(with_serve: bool, customers: int, tickets: int, days: int, live_every: float, seed: int) -> None:
    """A simulated helpdesk: days of history at once, then new tickets in real time.

    With --serve it starts `slatrack serve` too, prints where to look once the
    history is projected, and stops both at Ctrl-C; if serve dies, the feed
    stops and says so. Without, run `slatrack serve` beside it.
    """
    from services.dev.demo import Feed, FeedStopped, demo_with_serve, run_demo
    from services.kafka.client import BrokerUnreachable, ensure_topics, wait_until_reachable

    settings = _settings()
    _logging(settings)
    policy = _configured_policy(settings)
    feed: Feed = {
        "customers": customers,
        "tickets": tickets,
        "days": days,
        "seed": seed,
        "live_every": live_every,
    }
    if with_serve:
        sys.exit(asyncio.run(demo_with_serve(settings, policy, **feed)))

    async def go() -> int:
        stop = asyncio.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(signum, stop.set)
        await wait_until_reachable(settings, timeout=_broker_wait(settings))
        await ensure_topics(settings)
        fed = await run_demo(settings, policy, stop=stop, **feed)
        return fed.history + fed.live

    try:
        sent = asyncio.run(go())
    except BrokerUnreachable as exc:
        raise click.ClickException(f"{exc}. Is `slatrack serve` running?") from None
    except FeedStopped as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"demo: published {sent} events to {settings.topic_events} at {settings.bootstrap()}")


@main.group()
def topics() -> None:
    """The Kafka topics slatrack uses (events, dead letters, signals, policy versions)."""


@topics.command("create", epilog=_reads("broker", "log", "topics", "logging"))
@click.option("--wait", default=60.0, show_default=True, help="Seconds to wait for the broker.")
def topics_create(wait: float) -> None:
    """Create the topics that are missing, with their configs; check the others.

    Safe to run again: an existing topic is left as it is (a differing
    partition count is reported, never changed). For a deployment's one-shot
    init job; `serve` does the same at start unless
    SLATRACK_KAFKA_CREATE_TOPICS=false.
    """
    from services.kafka.client import ensure_topics, topic_specs, wait_until_reachable

    settings = _settings()
    _logging(settings)

    async def go() -> None:
        await wait_until_reachable(settings, timeout=wait)
        await ensure_topics(settings, create=True)  # whatever SLATRACK_KAFKA_CREATE_TOPICS says

    from aiokafka.errors import KafkaError

    try:
        asyncio.run(go())
    except (TimeoutError, RuntimeError, OSError, KafkaError) as exc:
        raise click.ClickException(f"topics not ready on {settings.bootstrap()}: {exc}") from exc
    for spec in topic_specs(settings):
        configs = ", ".join(f"{k}={v}" for k, v in sorted(spec.configs.items()))
        partitions = f"{spec.partitions} partition{'' if spec.partitions == 1 else 's'}"
        click.echo(f"{spec.name}: {partitions}, replication {spec.replication_factor}, {configs}")


# --- contracts: the versions of their policies, on the policy topic -----------------

NOW = "now"


@main.group()
def policy() -> None:
    """Contracts: publish a version of a contract's policy, list the versions, show one.

    A contract is a named policy with versions, each in force from an instant until the next;
    they are kept on the policy topic (SLATRACK_TOPIC_POLICIES), which every reader of the log
    reads in full. A ticket is measured against the version of its customer's contract in force
    at its dispatch (account.contract_changed events say which contract a customer is on).
    """


@policy.command("publish", epilog=_reads("broker", "producer", "log", "topics", "create", "logging"))
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--contract", required=True, metavar="NAME", help="The contract this is a version of.")
@click.option(
    "--effective-from",
    "effective_from",
    required=True,
    metavar="TIME",
    help="RFC 3339 instant from which it is in force, or `now`.",
)
@click.option(
    "--retroactive",
    is_flag=True,
    help="Allow an effective instant in the past: the tickets dispatched since then under this "
    "contract are recomputed with this version.",
)
def policy_publish(file: Path, contract: str, effective_from: str, retroactive: bool) -> None:
    """Publish the policy FILE (TOML) as a version of contract NAME, in force from TIME.

    The file is validated first (a bad one is one line naming each problem, and nothing is
    sent). An effective instant before now would rewrite history and is refused unless
    --retroactive is given; --retroactive with an instant in the future is refused too.
    Prints what it published: contract, version, digest, effective instant and offset.
    """
    now = whole_second(datetime.now(UTC))
    event = _publication(file, contract, effective_from, retroactive, now)
    settings = _settings()
    _logging(settings)
    offset = _policy_topic_run(settings, _publish_policy(settings, event))
    from projections.contracts import version_of

    click.echo(render.published_policy(version_of(event, offset).listing(), settings.topic_policies))


def _publication(
    file: Path, contract: str, effective_from: str, retroactive: bool, now: datetime
) -> "PolicyVersionPublished":
    """The event ``policy publish`` sends, every argument checked (UserError, BadParameter)."""
    from events.models import CONTRACT_PATTERN
    from events.policies import POLICY_EVENT_TYPE, decode_policy_event
    from projections.policy import PolicyError, parse_policy
    from projections.ticket import utc

    if not re.match(CONTRACT_PATTERN, contract):
        raise click.BadParameter(
            f"{contract!r} is not a contract name: a letter or digit, then up to 63 letters, digits, "
            "'_', '.' or '-'",
            param_hint="--contract",
        )
    effective = now if effective_from.strip().lower() == NOW else _instant(effective_from, "--effective-from")
    if effective < now and not retroactive:
        raise UserError(
            f"--effective-from {utc(effective)} is before now ({utc(now)}): it would rewrite history: "
            "tickets dispatched since then under this contract are recomputed; pass --retroactive to do so"
        )
    if effective > now and retroactive:
        raise UserError(
            f"--retroactive is for an effective instant in the past; {utc(effective)} is after now "
            f"({utc(now)}): leave --retroactive out"
        )
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise UserError(f"{file}: cannot read the file: {reason}") from None
    try:
        parsed = parse_policy(text, str(file))
    except PolicyError as exc:
        problems = "; ".join(exc.problems).replace("\n", " ")
        raise UserError(f"{exc.source}: invalid policy: {problems}") from None
    document = {
        "event_id": str(uuid.uuid4()),
        "type": POLICY_EVENT_TYPE,
        "schema_version": 1,
        "occurred_at": utc(now),
        "contract": contract,
        "effective_from": utc(effective),
        "retroactive": retroactive,
        "policy_version": parsed.version,
        "digest": parsed.digest,
        "policy": text,
    }
    try:  # validated as every reader validates it
        return decode_policy_event(orjson.dumps(document))
    except EventRejected as exc:
        raise UserError(f"{file}: cannot be published: {exc.kind}: {exc.detail}") from None


async def _publish_policy(settings: Settings, event: "PolicyVersionPublished") -> int:
    from services.kafka.client import ensure_topics
    from services.kafka.policies import publish_policy

    await _reachable(settings)
    await ensure_topics(settings)  # the policy topic in one partition, kept forever
    return await publish_policy(settings, event)


@policy.command("list", epilog=_reads("broker", "log", "batches", "logging"))
@click.option("--contract", metavar="NAME", help="Only this contract's versions.")
@click.option("--format", "output", type=click.Choice(["table", "json"]), default="table", show_default=True)
def policy_list(contract: str | None, output: str) -> None:
    """Every version on the policy topic, in the order published (position = offset).

    Records of the topic that are no valid version (a malformed event, a policy that is not
    the one its digest names, ...) are reported on stderr with their offset and why.
    """
    settings = _settings()
    _logging(settings)
    read = _policy_topic_run(settings, _read_policies(settings))
    listings = [v.listing() for v in read.versions if contract is None or v.contract == contract]
    if output == "json":
        rejected = [{"position": position, "reason": reason} for position, reason in read.rejected]
        _emit({"topic": settings.topic_policies, "versions": listings, "rejected": rejected})
    else:
        click.echo(render.policy_table(listings, settings.topic_policies))


@policy.command("show", epilog=_reads("broker", "log", "batches", "policy", "logging"))
@click.argument("name")
@click.option("--at", "at", metavar="TIME", help="RFC 3339 instant; default: now.")
@click.option("--format", "output", type=click.Choice(["toml", "json"]), default="toml", show_default=True)
def policy_show(name: str, at: str | None, output: str) -> None:
    """The version of contract NAME in force at TIME: its TOML text, or (json) its listing and text.

    With no version of the default contract in force, the configured policy
    (SLATRACK_POLICY_FILE, else the packaged one) is the default's; any other contract with no
    version in force then is an error.
    """
    from events.models import CONTRACT_PATTERN
    from projections.contracts import DEFAULT_CONTRACT, Contracts
    from projections.ticket import utc

    if not re.match(CONTRACT_PATTERN, name):
        raise click.BadParameter(f"{name!r} is not a contract name", param_hint="NAME")
    instant = _instant(at, "--at") if at is not None else whole_second(datetime.now(UTC))
    settings = _settings()
    configured = _configured_policy(settings)
    _logging(settings)
    read = _policy_topic_run(settings, _read_policies(settings))
    contracts = Contracts(configured, read.versions)
    in_force = [v for v in contracts.history_of(name) if v.effective_from <= instant]
    if in_force:
        version = in_force[-1]  # the latest to take effect (of two at one instant, the later published)
        listing, text = version.listing(), version.event.policy
    elif name == DEFAULT_CONTRACT:
        source = str(settings.policy_file) if settings.policy_file is not None else "the packaged default"
        listing = {
            "contract": DEFAULT_CONTRACT,
            "effective_from": None,
            "policy_version": configured.version,
            "digest": configured.digest,
            "source": source,
        }
        text = configured.text or ""
    else:
        versions = contracts.history_of(name)
        first = f"; its first takes effect at {utc(versions[0].effective_from)}" if versions else ""
        raise UserError(
            f"contract {name!r} has no version in force at {utc(instant)} ({len(versions)} published"
            f"{first}; see `slatrack policy list`)"
        )
    if output == "json":
        _emit({**listing, "policy": text})
    else:
        click.echo(text, nl=not text.endswith("\n"))


async def _read_policies(settings: Settings) -> "PolicyRead":
    from services.kafka.policies import read_policies

    await _reachable(settings)
    read = await read_policies(settings)
    for position, reason in read.rejected:
        click.echo(f"{settings.topic_policies} offset {position}: {reason}", err=True)
    return read


def _policy_topic_run(settings: Settings, work: "Coroutine[object, object, T]") -> T:
    """Run a policy command's work against the broker; its failures as one line."""
    from aiokafka.errors import KafkaError

    from services.kafka.client import TopicProblem

    try:
        return asyncio.run(work)
    except TopicProblem as exc:
        raise UserError(str(exc)) from None
    except (KafkaError, OSError) as exc:
        raise click.ClickException(f"the broker at {settings.bootstrap()} failed: {exc!r}") from exc
    except RuntimeError as exc:  # a topic that could not be created (services.kafka.client)
        raise click.ClickException(str(exc)) from exc


# --- restore: a lost log written back from the read models ---------------------


@main.command()
@click.option("--wait", default=60.0, show_default=True, help="Seconds to wait for the broker.")
def restore(wait: float) -> None:
    """Write the event log back into an empty ticket-events from the read models.

    For a cluster that lost its log while the read models (PostgreSQL) are
    intact: stop every worker and publisher, create the topics empty (with at
    least as many partitions as before), run this, then start the workers:
    they go on from their stored offsets. Each stored event goes back to its
    partition and offset; where the log held a rejected or repeated message,
    a placeholder (no key, an empty value) keeps the offsets. Refuses (status 2,
    nothing written) a topic that holds any record. `serve` does this by
    itself when it starts its embedded broker.
    """
    from aiokafka.errors import KafkaError

    from services.kafka.client import ensure_topics, wait_until_reachable
    from services.kafka.log_reader import LogNotFound
    from services.kafka.restore import Restored, RestoreFailed, RestoreRefused, restore_log, restore_policies
    from services.store import StoreError, open_store

    settings = _settings()
    _logging(settings)

    async def go() -> tuple[Restored | None, int | None]:
        await wait_until_reachable(settings, timeout=wait)
        await ensure_topics(settings)
        store = open_store(settings)
        try:
            return await restore_log(settings, store), await restore_policies(settings, store)
        finally:
            store.close()

    try:
        restored, versions = asyncio.run(go())
    except RestoreRefused as exc:
        click.echo(f"slatrack restore: {exc}", err=True)
        sys.exit(2)
    except (TimeoutError, LogNotFound, RestoreFailed, StoreError, KafkaError, OSError) as exc:
        raise click.ClickException(f"restore failed: {exc}") from exc
    if versions is not None:
        click.echo(f"restored {versions} policy versions into {settings.topic_policies}", err=True)
    if restored is None:
        click.echo("nothing to restore: the active read-model generation holds no event", err=True)
        return
    click.echo(restored.summary(), err=True)
    _emit(dataclasses.asdict(restored))


# --- the auditor's replay and the calendar questions -------------------------


def _policy(path: Path | None) -> "Policy":
    """A command's ``--policy`` file (default: the packaged policy); a bad one is one line, exit 2."""
    from services.bootstrap import policy_from

    return _checked(lambda: policy_from(path))


def _configured_policy(settings: Settings) -> "Policy":
    """The policy of SLATRACK_POLICY_FILE (services.bootstrap); a bad one is one line naming it."""
    from services.bootstrap import configured_policy

    return _checked(lambda: configured_policy(settings), "SLATRACK_POLICY_FILE")


def _checked(load: "Callable[[], Policy]", variable: str | None = None) -> "Policy":
    from projections.policy import PolicyError

    try:
        return load()
    except PolicyError as exc:
        where = f"{variable}: " if variable else ""
        problems = "; ".join(exc.problems).replace("\n", " ")
        raise UserError(f"{where}{exc.source}: invalid policy: {problems}") from None


def _open_store(settings: Settings, *, create: bool = True) -> "ReadModelStore":
    """The read models; not there or not openable as configured: one line (exit 2, else 1)."""
    from services.store import StoreError, StoreNotOpened, open_store

    try:
        return open_store(settings, create=create)
    except StoreNotOpened as exc:
        raise UserError(str(exc)) from None
    except StoreError as exc:
        raise click.ClickException(" ".join(str(exc).split())) from None


def _data_dir(settings: Settings) -> None:
    """The data dir exists and can be written."""
    from services.store import directory_problem

    problem = directory_problem(settings.data_dir)
    if problem is not None:
        raise UserError(f"SLATRACK_DATA_DIR: {problem}")


def _instant(value: str, name: str) -> datetime:
    try:
        return parse_instant(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=name) from None


def _emit(document: object) -> None:
    click.echo(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode())


@main.command(epilog=_reads("events", "policy"))
@click.option(
    "--events",
    "events_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="JSONL file of events, one per line (the line number is the recording order).",
)
@click.option("--as-of", "as_of", help="RFC 3339 instant; default: the latest occurred_at in the file.")
@click.option(
    "--policy",
    "policy_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Policy file (TOML) that measures every ticket, whatever the policy versions of the file; "
    "default: the versions of the file's policy lines, and for the default contract where it has "
    "none SLATRACK_POLICY_FILE (as the workers), else the packaged default policy.",
)
@click.option("--format", "output", type=click.Choice(["json", "table"]), default="json", show_default=True)
@click.option(
    "--compare",
    "compare_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="What-if: print only what --policy (without it: the file's policy versions) changes "
    "(breaches, amounts) against this policy file, which measures every ticket of the other side.",
)
@click.option(
    "--signals",
    "with_signals",
    is_flag=True,
    help="Also the log's story: every SLA signal a worker sends, those that stand, and the "
    "SLA counters' totals (JSON only).",
)
def replay(
    events_file: Path,
    as_of: str | None,
    policy_file: Path | None,
    output: str,
    compare_file: Path | None,
    with_signals: bool,
) -> None:
    """Replay a history: every ticket and customer view, as of an instant.

    Invalid lines, and later copies of an event id with another body than
    the first (duplicate_event_id_conflict), are reported on stderr (line
    number and reason) and counted in "rejected"; the replay goes on without
    them. The same input gives the same output, byte for byte. The file's
    policy lines (policy.version_published, which `slatrack export` writes
    first) are the contracts' versions: each ticket is measured against the
    version of its customer's contract in force at its dispatch; a bad one is
    reported and counted as a bad line is. With --compare OLD.toml, prints per
    customer the breaches and amounts that --policy (without it: the file's
    versions) changes against OLD; both sides keep the file's contract
    assignments (the views name the same contracts).
    """
    from projections.contracts import Contracts
    from projections.replay import replay as replay_history

    settings = _settings()
    # The default contract's, where the file has no version of it: the workers' (SLATRACK_POLICY_FILE).
    base = _configured_policy(settings)
    override = _policy(policy_file) if policy_file is not None else None
    instant = _instant(as_of, "--as-of") if as_of is not None else None
    records, rejected, versions = _recorded(events_file, settings.max_event_bytes)
    contracts = Contracts(base, versions, override=override)
    if compare_file is not None:
        old = Contracts(base, versions, override=_policy(compare_file))
        _what_if(records, old, contracts, instant, rejected, output)
        return
    if with_signals and output != "json":
        raise click.UsageError("--signals is for --format json")
    document = replay_history(records, contracts, instant, rejected, signals=with_signals)
    if output == "json":
        _emit(document)
    else:
        click.echo(render.replay_table(document))


def _recorded(events_file: Path, max_bytes: int) -> tuple[list["Recorded"], int, list["PolicyVersion"]]:
    """The events of a JSONL file (line number = recording order), each a first copy, and the
    policy versions of its policy lines (position = line number; an export writes them first);
    bad lines and later copies of an event id with another body reported and counted."""
    from projections.contracts import PolicyVersion
    from projections.timeline import Recorded, dedupe
    from services.worker.batches import PolicyDecoder

    records, rejected, versions = [], 0, []
    policies = PolicyDecoder()
    for lineno, line in _read_lines(events_file):
        if _is_policy_line(line):
            taken = policies.take(lineno, line)
            if isinstance(taken, PolicyVersion):
                versions.append(taken)
            elif isinstance(taken, str):
                rejected += 1
                click.echo(f"{events_file}:{lineno}: {taken}", err=True)
            continue  # a copy of an earlier version (an int): skipped, as a repeated event is
        outcome = _decoded(line, max_bytes)
        if isinstance(outcome, EventRejected):
            rejected += 1
            click.echo(f"{events_file}:{lineno}: {outcome.kind}: {outcome.detail}", err=True)
        else:
            records.append(Recorded(lineno, outcome))
    deduped = dedupe(records)
    for record, kept in deduped.conflicts:
        click.echo(
            f"{events_file}:{record.seq}: {RejectKind.DUPLICATE_EVENT_ID_CONFLICT}: event_id "
            f"{record.event.event_id!r} of customer {record.event.customer_id!r} is on line {kept.seq} "
            "with another body; the first copy is the event",
            err=True,
        )
    ordered = sorted(deduped.kept + deduped.duplicates, key=lambda r: r.seq)
    return ordered, rejected + len(deduped.conflicts), versions


def _what_if(
    records: list["Recorded"],
    old: "Contracts",
    new: "Contracts",
    as_of: datetime | None,
    rejected: int,
    output: str,
) -> None:
    from projections.compare import compare
    from projections.replay import replay as replay_history

    before = replay_history(records, old, as_of, rejected, breaches=True)
    document = compare(before, replay_history(records, new, as_of, rejected, breaches=True))
    if output == "json":
        _emit(document)
    else:
        click.echo(render.comparison_table(document))


@main.command(epilog=_reads("events", "policy", "store"))
@click.argument("ticket")
@click.option(
    "--customer",
    "customer_id",
    metavar="ID",
    help="The ticket's customer (a ticket is its customer's ticket id: needed when two customers "
    "have a ticket with this id).",
)
@click.option(
    "--events",
    "events_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="JSONL file of events, as for replay; default: the read models of the configured store.",
)
@click.option(
    "--as-of", "as_of", help="RFC 3339 instant; default: the latest occurred_at in --events, else now."
)
@click.option(
    "--policy",
    "policy_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Policy file (TOML) that measures the ticket; default: with --events, the version of its "
    "contract the file's policy lines put in force at its dispatch (the default contract: "
    "SLATRACK_POLICY_FILE, else the packaged default policy, where it has none); from the read "
    "models, the policy they are computed with.",
)
@click.option("--format", "output", type=click.Choice(["table", "json"]), default="table", show_default=True)
def explain(
    ticket: str,
    customer_id: str | None,
    events_file: Path | None,
    as_of: str | None,
    policy_file: Path | None,
    output: str,
) -> None:
    """The audit trail of TICKET: every event and what it did, the final view, a digest of the inputs."""
    from projections.contracts import Contracts
    from projections.explain import explain as explain_ticket
    from projections.policy import Policy
    from projections.replay import latest_instant
    from services.worker.histories import AmbiguousTicket, UnknownTicket, split_history

    settings = _settings()
    policy: Policy | Contracts
    policy = _policy(policy_file) if policy_file is not None else _configured_policy(settings)
    source: Policy | Contracts = policy
    instant = _instant(as_of, "--as-of") if as_of is not None else None
    try:
        if events_file is not None:
            everything, _, versions = _recorded(events_file, settings.max_event_bytes)
            # --policy measures the ticket whatever the versions: as replay --policy.
            source = Contracts(policy, versions, override=policy if policy_file is not None else None)
            try:
                records, account = split_history(everything, ticket, customer_id)
            except UnknownTicket:
                raise UnknownTicket(f"unknown ticket {ticket!r}: no event of it in {events_file}") from None
            instant = instant or latest_instant(everything)  # first copies already (per customer)
        else:
            records, account, stored_policy = _stored_history(settings, ticket, customer_id, policy)
            source = policy if policy_file is not None else stored_policy
    except (UnknownTicket, AmbiguousTicket) as exc:
        raise click.ClickException(
            f"{exc}{' (--customer)' if isinstance(exc, AmbiguousTicket) else ''}"
        ) from None
    at = instant or whole_second(datetime.now().astimezone())  # default: now, whole second
    document = explain_ticket(records, account, source, at)
    if document is None:
        raise click.ClickException(f"ticket {ticket!r} was not opened by {at:%Y-%m-%dT%H:%M:%SZ}")
    if output == "json":
        _emit(document)
    else:
        click.echo(render.explain_table(document))


def _stored_history(
    settings: Settings, ticket: str, customer_id: str | None, configured: "Policy"
) -> tuple[list["Recorded"], list["Recorded"], "Contracts"]:
    from services.worker.histories import histories_from_store

    store = _open_store(settings, create=False)  # a read-only command creates no read models
    try:
        return histories_from_store(store, ticket, customer_id, configured)
    finally:
        store.close()


@main.command(epilog=_reads("events", "policy", "store"))
@click.option("--customer", "customer_id", required=True, metavar="ID", help="The customer.")
@click.option(
    "--month",
    required=True,
    metavar="YYYY-MM",
    help="The month: the tickets dispatched in it, in the zone of their contract's month calendar.",
)
@click.option(
    "--format", "output", type=click.Choice(["json", "csv", "html"]), default="json", show_default=True
)
@click.option(
    "--events",
    "events_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="JSONL file of events, as `slatrack export` writes it; default: the read models of the "
    "configured store.",
)
@click.option(
    "--policy",
    "policy_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Policy file (TOML) of the default contract; default: with --events, SLATRACK_POLICY_FILE, "
    "else the packaged default policy; from the read models, the policy they are computed with.",
)
def report(
    customer_id: str, month: str, output: str, events_file: Path | None, policy_file: Path | None
) -> None:
    """A customer's monthly compliance report: the contract versions in force, attainment per
    clock and priority, breaches, escalations, billing, tickets still open, and the digest of
    the events and contracts it was computed from (docs/audit.md, "Verifying a monthly report").

    Every ticket dispatched in the month is evaluated as of the month's end, or, the month not
    being over, as of the customer's latest event. The same log gives the same bytes (only
    `complete` depends on when it runs), and the same bytes as GET /v1/customers/ID/report.
    With --events, measured with the file's policy events (an export writes them first), the
    default contract's base being --policy, else SLATRACK_POLICY_FILE, else the packaged default.
    """
    from projections.contracts import Contracts
    from projections.report import MonthError, monthly_report, parse_month
    from projections.report_render import render as render_report

    try:
        parse_month(month)
    except MonthError as exc:
        raise click.BadParameter(str(exc), param_hint="--month") from None
    settings = _settings()
    policy = _policy(policy_file) if policy_file is not None else _configured_policy(settings)
    source: Policy | Contracts
    if events_file is not None:
        records, _, versions = _recorded(events_file, settings.max_event_bytes)
        if not any(r.event.customer_id == customer_id for r in records):
            raise click.ClickException(f"unknown customer {customer_id!r}: no event of it in {events_file}")
        source = Contracts(policy, versions)
    else:
        records, source = _stored_customer(settings, customer_id, policy, policy_file is not None)
    document = monthly_report(records, source, customer_id, month, datetime.now().astimezone())
    click.echo(render_report(document, output), nl=False)  # bytes: as rendered (CRLF kept)


def _stored_customer(
    settings: Settings, customer_id: str, policy: "Policy", given: bool
) -> tuple[list["Recorded"], "Contracts"]:
    """A customer's stored events and the contracts of the active generation (its base replaced
    by ``policy`` if ``given``, else the generation's own policy or, recording none, ``policy``)."""
    from projections.contracts import Contracts
    from services.worker.histories import customer_history, generation_contracts

    store = _open_store(settings, create=False)  # a read-only command creates no read models
    try:
        generation = store.active_generation()
        if generation is None:
            raise click.ClickException(
                f"unknown customer {customer_id!r}: the read models hold no generation yet"
            )
        if store.customer(generation, customer_id) is None:
            raise click.ClickException(f"unknown customer {customer_id!r}: no event of it in the read models")
        contracts = generation_contracts(store, generation, policy)
        if given:
            contracts = Contracts(policy, contracts.versions)
        return customer_history(store, generation, customer_id), contracts
    finally:
        store.close()


@main.group(epilog=_reads())
@click.option(
    "--policy",
    "policy_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Policy file (TOML); default: the packaged default policy.",
)
@click.option("--calendar", "calendar_name", default="business", show_default=True, help="Calendar name.")
@click.pass_context
def calendar(ctx: click.Context, policy_file: Path | None, calendar_name: str) -> None:
    """Ask a policy's calendar: open time between instants, or N open seconds after one."""
    policy = _policy(policy_file)
    try:
        ctx.obj = policy.calendar(calendar_name)
    except KeyError as exc:
        raise click.BadParameter(str(exc.args[0]), param_hint="--calendar") from None


@calendar.command()
@click.argument("start")
@click.argument("end")
@click.pass_obj
def between(cal: "Calendar", start: str, end: str) -> None:
    """Open seconds between START and END (RFC 3339 instants)."""
    _emit({"seconds": cal.open_seconds(_instant(start, "START"), _instant(end, "END"))})


@calendar.command()
@click.argument("start")
@click.argument("seconds", type=click.IntRange(min=0))
@click.pass_obj
def add(cal: "Calendar", start: str, seconds: int) -> None:
    """The earliest instant at which SECONDS open seconds have elapsed after START."""
    from projections.ticket import utc

    _emit({"at": utc(cal.add_open_seconds(_instant(start, "START"), seconds))})


# --- dead letters: list them, send them back after a fix ----------------------

DLQ_REASONS = click.Choice([str(kind) for kind in RejectKind])


@main.group()
def dlq() -> None:
    """The dead-letter topic: what was rejected and why, and sending it back after a fix."""


@dlq.command("list", epilog=_reads("broker", "log", "topics", "logging"))
@click.option("--reason", "reasons", multiple=True, type=DLQ_REASONS, help="Only this reason (repeatable).")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(min=1), help="Show at most N.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document with every field, for scripts.")
def dlq_list(reasons: tuple[str, ...], limit: int, as_json: bool) -> None:
    """List dead letters, oldest first: name (PARTITION@OFFSET in the dead-letter topic), reason,
    where the message was, the first bytes of its value and what is wrong with it."""
    from services.kafka.dead_letters import list_dead_letters

    settings = _settings()
    _logging(settings)
    listing = _dlq_run(settings, list_dead_letters(settings, set(reasons), limit))
    if as_json:
        _emit(
            {
                "topic": settings.topic_dlq,
                "total": listing.total,
                "matching": listing.matching,
                "dead_letters": [letter.document() for letter in listing.shown],
            }
        )
        return
    header = f"{'dead letter':<12} {'reason':<28} {'original':<28} {'value':<42} detail"
    lines = [header, "-" * len(header)]
    for letter in listing.shown:
        doc = letter.document()
        detail = str(doc["detail"] or "")
        lines.append(
            f"{letter.name:<12} {letter.reason:<28} {letter.original:<28} {doc['value_start']!s:<42} "
            + (detail if len(detail) <= 100 else detail[:99] + "…")
        )
    lines.append(
        f"{len(listing.shown)} shown of {listing.matching} matching, {listing.total} dead letters "
        f"in {settings.topic_dlq}"
    )
    click.echo("\n".join(lines))


@dlq.command("replay", epilog=_reads("broker", "producer", "log", "topics", "dlq", "logging"))
@click.argument("names", nargs=-1, metavar="[PARTITION@OFFSET]...")
@click.option("--reason", "reasons", multiple=True, type=DLQ_REASONS, help="All of this reason.")
@click.option("--send", is_flag=True, help="Send them (without it: only show what would be sent).")
def dlq_replay(names: tuple[str, ...], reasons: tuple[str, ...], send: bool) -> None:
    """Send dead letters back to the events topic, once each, after what rejected them was fixed.

    Name them (PARTITION@OFFSET, as `dlq list` shows) or choose them by
    --reason. Each goes back as it was (key, value, its publisher's headers)
    with a slatrack-replay-of header naming the dead letter; one whose replay
    is in the events topic already is not sent again. Without --send, a dry
    run: nothing is sent. A message that is itself wrong is not helped by a
    replay: publish a corrected copy instead (`slatrack publish`).
    """
    from services.kafka.dead_letters import UnknownDeadLetter, parse_name, plan_replay, send_replays

    if bool(names) == bool(reasons):
        raise click.UsageError("name the dead letters (PARTITION@OFFSET) or give --reason, not both")
    for name in names:
        try:
            parse_name(name)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="PARTITION@OFFSET") from None
    settings = _settings()
    _logging(settings)
    try:
        plan = _dlq_run(settings, plan_replay(settings, names, set(reasons)))
    except UnknownDeadLetter as exc:
        raise click.UsageError(str(exc)) from None
    for name, where in plan.replayed.items():
        click.echo(f"{name}: replayed before, at {settings.topic_events} {where}: not sent again")
    for letter in plan.foreign:
        click.echo(f"{letter.name}: came from {letter.original_topic}, not {settings.topic_events}: not sent")
    for letter in plan.cut:
        click.echo(
            f"{letter.name}: cut to fit the dead-letter topic: not sent (the message as it came is at "
            f"{letter.original}; publish it from there)"
        )
    if not send:
        for letter in plan.send:
            click.echo(f"{letter.name}: {letter.reason}, from {letter.original}: would be sent")
        click.echo(f"dry run: {len(plan.send)} to send, nothing sent (add --send)")
        return

    def sent(letter: "DeadLetter", where: str) -> None:
        click.echo(f"{letter.name}: sent to {settings.topic_events} {where}")

    _dlq_run(settings, send_replays(settings, plan.send, sent))
    click.echo(f"sent {len(plan.send)} dead letters to {settings.topic_events}")


def _dlq_run(settings: Settings, work: "Coroutine[object, object, T]") -> T:
    """Run a dlq command's work against the broker; its failures as one line (exit status 1)."""
    from aiokafka.errors import KafkaError

    from services.kafka.client import wait_until_reachable
    from services.kafka.log_reader import LogNotFound

    async def go() -> T:
        try:
            await wait_until_reachable(settings, timeout=15)
        except TimeoutError as exc:
            hint = " Is `slatrack serve` running?" if settings.uses_embedded_broker else ""
            raise click.ClickException(f"{exc}.{hint}") from exc
        return await work

    try:
        return asyncio.run(go())
    except LogNotFound as exc:
        raise click.ClickException(str(exc)) from exc
    except (KafkaError, OSError) as exc:
        raise click.ClickException(f"the broker at {settings.bootstrap()} failed: {exc}") from exc


if __name__ == "__main__":
    main()
