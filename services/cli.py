"""The ``slatrack`` command line."""

import asyncio
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import click
from pydantic import ValidationError

from events import Event, EventRejected, decode_event
from events.schema import render, schema_documents
from services.config import Settings, settings_help

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
def serve() -> None:
    """Consume and validate the event log, serve HTTP (intake, /healthz, /metrics).

    With SLATRACK_KAFKA_BOOTSTRAP unset, an embedded broker is started on
    127.0.0.1 (memory only: for development, tests and demos). Ctrl-C or
    SIGTERM stops everything this command started.
    """
    from services.serve import run

    settings = _settings()
    _logging(settings)
    run(settings)


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
    from services.kafka import wait_until_reachable
    from services.publisher import EventPublisher

    try:
        await wait_until_reachable(settings, timeout=15)
    except TimeoutError as exc:
        hint = " Is `slatrack serve` running?" if settings.uses_embedded_broker else ""
        raise click.ClickException(f"{exc}.{hint}") from exc
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


if __name__ == "__main__":
    main()
