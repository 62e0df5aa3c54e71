"""The ``slatrack`` command line."""

import asyncio
import logging
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click
import orjson
from pydantic import TypeAdapter, ValidationError

from events import Event, EventRejected, decode_event
from events.models import Instant
from events.schema import render, schema_documents
from projections.timeline import whole_second
from services.config import Settings, settings_help

if TYPE_CHECKING:
    from projections.calendar import Calendar
    from projections.policy import Policy

INSTANT: TypeAdapter[datetime] = TypeAdapter(Instant)

SCHEMA_DIR = Path("docs/schemas")
PUBLISH_CHUNK = 1000


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        raise click.UsageError(f"bad configuration: {exc}") from exc


def _logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )


@click.group()
def main() -> None:
    """slatrack: event-sourced SLA tracking for support desks."""


@main.command(epilog="Configuration (environment variables):\n\n\b\n" + settings_help())
@click.option(
    "--role",
    type=click.Choice(["all", "worker", "api"]),
    default="all",
    show_default=True,
    help="worker: consume, project, timers, signals; api: HTTP only; all: both.",
)
def serve(role: str) -> None:
    """Project the event log into the read models and serve HTTP (intake, views, /metrics).

    With SLATRACK_KAFKA_BOOTSTRAP unset, an embedded broker is started on
    127.0.0.1 (memory only: for development, tests and demos). Ctrl-C or
    SIGTERM stops everything this command started.
    """
    from services.serve import run

    settings = _settings()
    _logging(settings)
    run(settings, role)  # type: ignore[arg-type]


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--skip-invalid", is_flag=True, help="Send the valid lines even if some are invalid.")
def publish(file: Path, skip_invalid: bool) -> None:
    """Validate every line of a JSONL FILE, then send the events to the log.

    Invalid lines are reported by number with the reason; unless
    --skip-invalid is given, nothing is sent when any line is invalid.
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
    from services.kafka import ensure_topics, wait_until_reachable
    from services.publisher import EventPublisher

    try:
        await wait_until_reachable(settings, timeout=15)
    except TimeoutError as exc:
        hint = " Is `slatrack serve` running?" if settings.uses_embedded_broker else ""
        raise click.ClickException(f"{exc}.{hint}") from exc
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


def _read_events(file: Path, max_bytes: int) -> Iterator[tuple[int, Event | EventRejected]]:
    """Each non-blank line, decoded: (line number, event or why not). Streams: large files are fine."""
    with open(file, "rb") as lines:
        for lineno, line in enumerate(lines, start=1):
            line = line.rstrip(b"\r\n")
            if not line.strip():
                continue
            try:
                yield lineno, decode_event(line, max_bytes=max_bytes)
            except EventRejected as rejection:
                yield lineno, rejection


@main.command()
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
        (out / name).write_text(render(document), encoding="utf-8")
    for name in stale:
        if name not in schema_documents():
            (out / name).unlink()
    click.echo(f"wrote {len(schema_documents())} schemas to {out}")


def schema_drift(directory: Path) -> list[str]:
    """Names of schema files that are missing, stale, or no longer generated."""
    expected = {name: render(doc) for name, doc in schema_documents().items()}
    present = {p.name for p in directory.glob("*.json")} if directory.is_dir() else set()
    drift = [
        name
        for name, text in expected.items()
        if name not in present or (directory / name).read_text(encoding="utf-8") != text
    ]
    return sorted(drift + [name for name in present if name not in expected])


# --- operations: rebuild, demo --------------------------------------------------


@main.command()
@click.option(
    "--no-switch", is_flag=True, help="Build and check the new generation, but keep the current one."
)
def rebuild(no_switch: bool) -> None:
    """Replay the log into a fresh generation of the read models, check it, switch to it.

    The current generation keeps serving meanwhile; workers follow the
    switch by themselves. Prints the counts and the check as JSON.
    """
    from services.rebuild import rebuild as run_rebuild
    from services.serve import policy_of
    from services.store import open_store

    settings = _settings()
    _logging(settings)
    store = open_store(settings)
    try:
        with click.progressbar(length=1, label="rebuilding", file=sys.stderr) as bar:

            def progress(done: int, total: int) -> None:
                bar.length = max(total, 1)
                bar.update(done - bar.pos)

            report = asyncio.run(run_rebuild(settings, store, policy_of(settings), progress, not no_switch))
    finally:
        store.close()
    _emit(report.as_dict())
    if report.mismatches:
        raise click.ClickException(f"{len(report.mismatches)} differences: not switched")


@main.command()
@click.option("--customers", default=300, show_default=True, help="Simulated customers.")
@click.option("--tickets", default=2000, show_default=True, help="Simulated tickets.")
@click.option("--days", default=3, show_default=True, help="Days of history before now.")
@click.option("--speedup", default=1440.0, show_default=True, help="How much faster the history runs.")
@click.option("--rate", default=500.0, show_default=True, help="At most this many events a second.")
@click.option("--seed", default=1, show_default=True, help="Same seed, same traffic.")
def demo(customers: int, tickets: int, days: int, speedup: float, rate: float, seed: int) -> None:
    """Publish a simulated helpdesk's traffic to the log (run `slatrack serve` beside it)."""
    from services.demo import run_demo
    from services.kafka import ensure_topics, wait_until_reachable

    settings = _settings()
    _logging(settings)

    async def go() -> int:
        await wait_until_reachable(settings, timeout=60)
        await ensure_topics(settings)
        return await run_demo(
            settings, customers=customers, tickets=tickets, days=days, speedup=speedup, rate=rate, seed=seed
        )

    sent = asyncio.run(go())
    click.echo(f"demo: published {sent} events to {settings.topic_events} at {settings.bootstrap()}")


# --- the auditor's replay and the calendar questions -------------------------


def _policy(path: Path | None) -> "Policy":
    from projections.policy import PolicyError, default_policy, load_policy

    try:
        return load_policy(path) if path is not None else default_policy()
    except PolicyError as exc:
        raise click.ClickException(str(exc)) from exc


def _instant(value: str, name: str) -> datetime:
    try:
        return whole_second(INSTANT.validate_python(value))
    except ValidationError as exc:
        raise click.BadParameter(
            exc.errors()[0]["msg"].removeprefix("Value error, "), param_hint=name
        ) from None


def _emit(document: object) -> None:
    click.echo(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode())


@main.command()
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
    help="Policy file (TOML); default: the packaged default policy.",
)
@click.option("--format", "output", type=click.Choice(["json", "table"]), default="json", show_default=True)
def replay(events_file: Path, as_of: str | None, policy_file: Path | None, output: str) -> None:
    """Replay a history: every ticket and customer view, as of an instant.

    Invalid lines are reported on stderr (line number and reason) and
    counted in "rejected"; the replay goes on without them. The same input
    gives the same output, byte for byte.
    """
    from projections.replay import replay as replay_history
    from projections.timeline import Recorded

    policy = _policy(policy_file)
    instant = _instant(as_of, "--as-of") if as_of is not None else None
    records, rejected = [], 0
    for lineno, outcome in _read_events(events_file, Settings.model_fields["max_event_bytes"].default):
        if isinstance(outcome, EventRejected):
            rejected += 1
            click.echo(f"{events_file}:{lineno}: {outcome.kind}: {outcome.detail}", err=True)
        else:
            records.append(Recorded(lineno, outcome))
    document = replay_history(records, policy, instant, rejected)
    if output == "json":
        _emit(document)
    else:
        click.echo(render_table(document))


def render_table(document: dict) -> str:
    """A summary for people: one line per ticket, then one per customer."""
    as_of, version, rejected = document["as_of"], document["policy_version"], document["rejected"]
    lines = [f"as of {as_of}   policy {version}   rejected lines: {rejected}", ""]
    header = f"{'ticket':<14} {'customer':<12} {'prio':<7} {'state':<9} {'response':<31} {'resolution':<31}"
    header += " esc  billing"
    lines += [header, "-" * len(header)]
    for t in document["tickets"]:
        billing = t["billing"]
        bill_text = (
            "-"
            if billing["rule"] is None
            else (f"{billing['rule']} {billing['status']} {_dollars(billing['amount_cents'])}")
        )
        lines.append(
            f"{t['ticket_id'][:14]:<14} {t['customer_id'][:12]:<12} {t['priority']:<7} {t['state']:<9} "
            f"{_clock_text(t['clocks']['response']):<31} {_clock_text(t['clocks']['resolution']):<31} "
            f"{t['escalation']['level']:<4} {bill_text}"
            + (f"  [{', '.join(t['flags'])}]" if t["flags"] else "")
        )
    lines += ["", f"{'customer':<14} {'standing':<22} billing by month", "-" * 60]
    for c in document["customers"]:
        standing = (
            "dashboard suspended" if c["dashboard_suspended"] else "delinquent" if c["delinquent"] else "good"
        )
        months = ", ".join(f"{m}: {_dollars(v['amount_cents'])}" for m, v in c["billing"].items()) or "-"
        lines.append(f"{c['customer_id'][:14]:<14} {standing:<22} {months}")
    return "\n".join(lines)


def _dollars(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


def _clock_text(clock: dict) -> str:
    def hm(seconds: int) -> str:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"

    target = "none" if clock["target_seconds"] is None else hm(clock["target_seconds"])
    mark = " BREACHED" if clock["breached"] else " at risk" if clock["at_risk"] else ""
    return f"{clock['status']:<7} {hm(clock['elapsed_seconds'])}/{target}{mark}"


@main.group()
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


if __name__ == "__main__":
    main()
