"""The ticket page's picture of its clocks as SVG, drawn by the server from a
:class:`~services.api.console.clock_picture.Picture`.

The DOM is a contract (the browser tests and the docs' screenshot read it, never pixels)::

    <svg id="clocks" role="img" aria-label="...">
      <g class="clock" data-clock="response|resolution" data-cycle="N">
        <rect class="stretch" data-kind="running|paused|stopped" data-reason="..."
              data-start="EPOCH" data-end="EPOCH"><title>...</title></rect>
        <line class="mark" data-kind="due|warning|breach|event|priority-change" data-at="EPOCH"
              [data-type="EVENT TYPE" data-event-id="ID"] [data-projected="true"]><title>...</title></line>

``data-reason`` is empty for running stretches; for paused ones the holds, space-separated
(``pending_customer``, ``suspension``, ``closed_hours``); for stopped ones what stopped the
clock. Every ``<title>`` gives the instants in the policy's time zone and in UTC (shown on
hover). Colours keep at least 4.5:1 against the white background, and each kind also has its own
pattern, shape or letter, so nothing relies on colour alone. No ``style`` attribute (the console's
CSP forbids inline styles): presentation attributes only. Every text is escaped.
"""

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from markupsafe import Markup, escape

from services.api.console.clock_picture import CLOSED_HOURS, SUSPENSION, CyclePicture, Mark, Picture, Stretch
from services.api.console.render import duration_text, local_text, utc_text

WIDTH, LEFT, RIGHT, TOP = 960, 190, 24, 34
ROW, BAR_Y, BAR_H = 54, 16, 20
LEGEND_H = 84
INK, MUTED, WHITE = "#1b1f24", "#4a5560", "#ffffff"
RUNNING, STATUS_PAUSE, SUSPENDED, CLOSED_LINE = "#1a6b34", "#5b4b8a", "#8a5300", "#4a5560"
DUE, WARNING, BREACH, PRIORITY = "#0b5cad", "#8a5300", "#a4161a", "#5b4b8a"

# kind -> (stroke, width, dash, letter)
MARK_STYLE: dict[str, tuple[str, int, str | None, str]] = {
    "due": (DUE, 2, "6 3", "D"),
    "warning": (WARNING, 2, "4 2 1 2", "W"),
    "breach": (BREACH, 3, None, "B"),
    "priority-change": (PRIORITY, 2, "1 2", "P"),
    "event": (INK, 1, None, ""),
}

# A breach is one second after its due instant: its letter beside the due's, not on it.
LETTER_SHIFT = {"breach": 9, "warning": -9}

DEFS = "".join(
    [
        "<defs>",
        '<pattern id="p-status" width="8" height="8" patternUnits="userSpaceOnUse" '
        'patternTransform="rotate(45)">',
        f'<rect width="8" height="8" fill="{STATUS_PAUSE}"/>',
        f'<line x1="0" y1="0" x2="0" y2="8" stroke="{WHITE}" stroke-width="3"/></pattern>',
        '<pattern id="p-suspension" width="8" height="8" patternUnits="userSpaceOnUse">',
        f'<rect width="8" height="8" fill="{SUSPENDED}"/>',
        f'<path d="M0 0L8 8M8 0L0 8" stroke="{WHITE}" stroke-width="1.5"/></pattern>',
        '<pattern id="p-closed" width="6" height="6" patternUnits="userSpaceOnUse" '
        'patternTransform="rotate(-45)">',
        '<rect width="6" height="6" fill="#eef1f4"/>',
        f'<line x1="0" y1="0" x2="0" y2="6" stroke="{CLOSED_LINE}" stroke-width="1.5"/></pattern>',
        "</defs>",
    ]
)


def _instant(at: int, zone: str) -> str:
    moment = datetime.fromtimestamp(at, UTC)
    return f"{local_text(moment, zone)} ({utc_text(moment)})"


def _reason_text(reason: str | None) -> str:
    return "" if reason is None else ", ".join(part.replace("_", " ") for part in reason.split())


def _fill(stretch: Stretch) -> str:
    if stretch.kind == "running":
        return RUNNING
    if stretch.kind == "stopped":
        return INK
    reasons = (stretch.reason or "").split()
    if CLOSED_HOURS in reasons:
        return "url(#p-closed)"
    if SUSPENSION in reasons:
        return "url(#p-suspension)"
    return "url(#p-status)"


class _Scale:
    def __init__(self, start: int, end: int):
        self.start, self.span = start, max(end - start, 1)

    def x(self, at: int) -> float:
        return round(LEFT + (at - self.start) / self.span * (WIDTH - LEFT - RIGHT), 2)


def _stretch(stretch: Stretch, scale: _Scale, top: int, zone: str) -> str:
    x0, x1 = scale.x(stretch.start), scale.x(stretch.end)
    stopped = stretch.kind == "stopped"
    y, height = (top + BAR_Y + BAR_H // 2 - 3, 6) if stopped else (top + BAR_Y, BAR_H)
    what = stretch.kind + (f": {_reason_text(stretch.reason)}" if stretch.reason else "")
    title = (
        f"{what}, {duration_text(stretch.end - stretch.start)}, from {_instant(stretch.start, zone)} "
        f"to {_instant(stretch.end, zone)}"
    )
    reason = f' data-reason="{escape(stretch.reason or "")}"'
    return (
        f'<rect class="stretch" data-kind="{escape(stretch.kind)}"{reason} data-start="{stretch.start}" '
        f'data-end="{stretch.end}" x="{x0}" y="{y}" width="{max(round(x1 - x0, 2), 0.5)}" height="{height}" '
        f'fill="{_fill(stretch)}" stroke="{INK}" stroke-width="0.5"><title>{escape(title)}</title></rect>'
    )


def _mark(mark: Mark, scale: _Scale, top: int, zone: str) -> str:
    stroke, width, dash, letter = MARK_STYLE[mark.kind]
    if mark.projected:
        dash = "2 3"
    x = scale.x(mark.at)
    y1, y2 = (
        (top + BAR_Y + BAR_H, top + BAR_Y + BAR_H + 9) if mark.kind == "event" else (top + 4, top + ROW - 10)
    )
    extra = ""
    if mark.event_type is not None:
        extra += f' data-type="{escape(mark.event_type)}"'
    if mark.event_id is not None:
        extra += f' data-event-id="{escape(mark.event_id)}"'
    if mark.projected:
        extra += ' data-projected="true"'
    dashed = f' stroke-dasharray="{dash}"' if dash else ""
    title = f"{mark.label}: {_instant(mark.at, zone)}"
    line = (
        f'<line class="mark" data-kind="{mark.kind}" data-at="{mark.at}"{extra} x1="{x}" y1="{y1}" x2="{x}" '
        f'y2="{y2}" stroke="{stroke}" stroke-width="{width}"{dashed}><title>{escape(title)}</title></line>'
    )
    if letter:
        line += (
            f'<text class="mark-label" x="{x + LETTER_SHIFT.get(mark.kind, 0)}" y="{top + 12}" '
            f'text-anchor="middle" font-size="11" font-weight="700" fill="{stroke}" aria-hidden="true">'
            f"{letter}</text>"
        )
    return line


def _row(cycle: CyclePicture, scale: _Scale, top: int, zone: str, cycles_of_clock: int) -> str:
    label = cycle.clock + (f" · cycle {cycle.cycle}" if cycles_of_clock > 1 else "")
    middle = top + BAR_Y + BAR_H // 2
    detail = f"{cycle.priority}, target {duration_text(cycle.target_seconds) or 'none'}, {cycle.calendar}"
    parts = [
        f'<g class="clock" data-clock="{escape(cycle.clock)}" data-cycle="{cycle.cycle}">',
        f'<text class="row-label" x="8" y="{top + BAR_Y + 9}" font-size="13" font-weight="600" '
        f'fill="{INK}">{escape(label)}</text>',
        f'<text class="row-detail" x="8" y="{top + BAR_Y + 24}" font-size="11" fill="{MUTED}">'
        f"{escape(detail)}</text>",
        f'<line x1="{LEFT}" y1="{middle}" x2="{WIDTH - RIGHT}" y2="{middle}" stroke="#d0d7de"/>',
    ]
    parts += [_stretch(s, scale, top, zone) for s in cycle.stretches]
    parts += [_mark(m, scale, top, zone) for m in cycle.marks]
    parts.append("</g>")
    return "".join(parts)


def _axis(picture: Picture, scale: _Scale, bottom: int) -> str:
    parts = ['<g class="axis">']
    ticks = 4
    for i in range(ticks + 1):
        at = picture.start + (picture.end - picture.start) * i // ticks
        x = scale.x(at)
        moment = datetime.fromtimestamp(at, UTC)
        anchor = "start" if i == 0 else "end" if i == ticks else "middle"
        text = moment.astimezone(ZoneInfo(picture.time_zone)).strftime("%a %d %b %H:%M")  # Mon 09 Nov 14:00
        parts.append(
            f'<line x1="{x}" y1="{TOP - 6}" x2="{x}" y2="{bottom}" stroke="#d0d7de" stroke-width="1"/>'
            f'<text x="{x}" y="{TOP - 12}" font-size="11" fill="{MUTED}" text-anchor="{anchor}">'
            f"<title>{escape(_instant(at, picture.time_zone))}</title>{escape(text)}</text>"
        )
    x = scale.x(picture.as_of)
    parts.append(
        f'<line class="as-of" data-at="{picture.as_of}" x1="{x}" y1="{TOP - 6}" x2="{x}" y2="{bottom}" '
        f'stroke="{INK}" stroke-width="1.5" stroke-dasharray="8 2 2 2">'
        f"<title>{escape('as of ' + _instant(picture.as_of, picture.time_zone))}</title></line>"
    )
    parts.append("</g>")
    return "".join(parts)


LEGEND = (
    ("rect", RUNNING, "running (counting)"),
    ("rect", "url(#p-status)", "paused: status (pending)"),
    ("rect", "url(#p-suspension)", "paused: suspension"),
    ("rect", "url(#p-closed)", "closed hours (not counting)"),
    ("bar", INK, "stopped"),
    ("D", DUE, "due (dotted: projected)"),
    ("W", WARNING, "warning"),
    ("B", BREACH, "breach"),
    ("P", PRIORITY, "priority change"),
    ("tick", INK, "event"),
)


def _legend(top: int) -> str:
    parts = [f'<g class="legend" transform="translate(8 {top})">']
    per_row, width = 4, (WIDTH - 16) // 4
    for i, (shape, colour, text) in enumerate(LEGEND):
        x, y = (i % per_row) * width, (i // per_row) * 26
        if shape == "rect":
            parts.append(
                f'<rect x="{x}" y="{y}" width="22" height="14" fill="{colour}" '
                f'stroke="{INK}" stroke-width="0.5"/>'
            )
        elif shape == "bar":
            parts.append(f'<rect x="{x}" y="{y + 4}" width="22" height="6" fill="{colour}"/>')
        elif shape == "tick":
            parts.append(f'<line x1="{x + 11}" y1="{y + 2}" x2="{x + 11}" y2="{y + 14}" stroke="{colour}"/>')
        else:
            parts.append(
                f'<text x="{x + 11}" y="{y + 12}" text-anchor="middle" font-size="12" font-weight="700" '
                f'fill="{colour}">{shape}</text>'
            )
        parts.append(f'<text x="{x + 28}" y="{y + 12}" font-size="12" fill="{INK}">{escape(text)}</text>')
    parts.append("</g>")
    return "".join(parts)


def clocks_svg(picture: Picture) -> Markup:
    """The ``<svg id="clocks">`` of a picture (safe markup: every text in it is escaped)."""
    scale = _Scale(picture.start, picture.end)
    count: dict[str, int] = {}
    for cycle in picture.cycles:
        count[cycle.clock] = count.get(cycle.clock, 0) + 1
    rows_bottom = TOP + ROW * len(picture.cycles)
    height = rows_bottom + 12 + LEGEND_H
    clocks = ", ".join(f"{name} ({n} cycle{'s' if n > 1 else ''})" for name, n in count.items())
    label = (
        f"Clocks of ticket {picture.ticket_id}: {clocks}, from "
        f"{_instant(picture.start, picture.time_zone)} to {_instant(picture.end, picture.time_zone)}"
    )
    parts = [
        f'<svg id="clocks" role="img" aria-label="{escape(label)}" xmlns="http://www.w3.org/2000/svg" '
        f'viewBox="0 0 {WIDTH} {height}" width="100%" font-family="system-ui, sans-serif">',
        DEFS,
        _axis(picture, scale, rows_bottom),
    ]
    parts += [
        _row(cycle, scale, TOP + ROW * i, picture.time_zone, count[cycle.clock])
        for i, cycle in enumerate(picture.cycles)
    ]
    parts.append(_legend(rows_bottom + 12))
    parts.append("</svg>")
    # Every text and attribute value above went through escape(); the rest is our own markup.
    return Markup("".join(parts))  # noqa: S704
