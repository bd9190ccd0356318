"""The investigation's timeline picture: a server-rendered SVG, no JavaScript.

Visits sit on a time axis, coloured counted / not counted / cancelled / deleted;
schedule gaps are shaded; the remaining count is a step line over the same axis.
"""

from __future__ import annotations

import datetime as dt
from html import escape

from tally.clinic.investigator.explain import SCHEDULE_GAP, Investigation

WIDTH, HEIGHT = 960, 240
LEFT, RIGHT, TOP, BOTTOM = 48, 48, 24, 40
VISIT_Y = 70
LABEL_GAP = 11  # px between two 11 px labels' baselines, so that one does not sit on the other

COLOURS = {
    "counted": "#1a7f37",
    "not_counted": "#bf5700",
    "cancelled": "#8c959f",
    "deleted": "#cf222e",
    "other": "#6e7781",
}
LEGEND = [
    ("counted", "counted"),
    ("not_counted", "not counted"),
    ("cancelled", "cancelled / no-show"),
    ("deleted", "deleted"),
]


def visit_class(event: dict) -> str:
    if event["status"] == "deleted":
        return "deleted"
    if event["status"] in ("cancelled", "no_show"):
        return "cancelled"
    if event["counted"]:
        return "counted"
    if event["reason"] in ("UPCOMING", "NOT_CHECKED_IN_YET"):
        return "other"
    return "not_counted"


def render_timeline(investigation: Investigation, tz: dt.tzinfo, *, now: dt.datetime | None = None) -> str:
    summary = investigation.summary
    visits = [e for e in investigation.timeline if e["kind"] == "visit"]
    ledger = [e for e in investigation.timeline if e["kind"] == "ledger"]
    moments = [e["at"] for e in investigation.timeline] + [summary["sold_at"]]
    start, end = min(moments), max(moments)
    if now is not None and now > end and (now - end).days < 60:
        end = now
    if end <= start:
        end = start + dt.timedelta(days=1)
    span = (end - start).total_seconds()
    plot_w = WIDTH - LEFT - RIGHT
    axis_y = HEIGHT - BOTTOM
    total = max(summary["sessions_total"], 1)

    def x(moment: dt.datetime) -> float:
        return LEFT + plot_w * (moment - start).total_seconds() / span

    def y_count(remaining: int) -> float:
        low, high = VISIT_Y + 30, axis_y - 8
        return high - (high - low) * remaining / total

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-labelledby="tl-title tl-desc" class="timeline" preserveAspectRatio="xMidYMid meet">',
        f'<title id="tl-title">Timeline of {escape(summary["name"])}</title>',
        f'<desc id="tl-desc">{len(visits)} visits; {summary["sessions_used"]} of {summary["sessions_total"]} '
        f'sessions used, {summary["sessions_remaining"]} left.</desc>',
    ]
    for finding in investigation.findings:
        if finding.code == SCHEDULE_GAP:
            gap_start = dt.datetime.combine(finding.date, dt.time(12), tzinfo=tz)
            gap_end = dt.datetime.combine(finding.until or finding.date, dt.time(12), tzinfo=tz)
            parts.append(f'<rect x="{x(gap_start):.1f}" y="{TOP}" width="{max(x(gap_end) - x(gap_start), 2):.1f}" '
                         f'height="{axis_y - TOP}" fill="#fff8c5" stroke="#d4a72c" stroke-dasharray="4 3">'
                         f'<title>{escape(finding.message)}</title></rect>')
    parts.append(f'<line x1="{LEFT}" y1="{axis_y}" x2="{WIDTH - RIGHT}" y2="{axis_y}" stroke="#57606a"/>')
    for tick in _month_ticks(start.astimezone(tz), end.astimezone(tz)):
        tx = x(tick)
        parts.append(f'<line x1="{tx:.1f}" y1="{axis_y}" x2="{tx:.1f}" y2="{axis_y + 5}" stroke="#57606a"/>')
        parts.append(f'<text x="{tx:.1f}" y="{axis_y + 18}" font-size="11" text-anchor="middle" '
                     f'fill="#57606a">{tick:%b %Y}</text>')
    sold_x = x(summary["sold_at"])
    parts.append(f'<line x1="{sold_x:.1f}" y1="{TOP}" x2="{sold_x:.1f}" y2="{axis_y}" stroke="#0969da" '
                 f'stroke-dasharray="2 2"><title>Sold</title></line>')
    # Below the legend row, so the label never sits on it.
    parts.append(f'<text x="{sold_x + 3:.1f}" y="{TOP + 28}" font-size="11" fill="#0969da">sold</text>')
    # Remaining count as a step line.
    remaining = summary["sessions_total"]
    points = [(x(summary["sold_at"]), y_count(remaining))]
    for entry in ledger:
        ex = x(entry["at"])
        points.append((ex, points[-1][1]))
        remaining = summary["sessions_total"] - entry["used_after"]
        points.append((ex, y_count(remaining)))
    points.append((WIDTH - RIGHT, points[-1][1]))
    path = " ".join(f"{px:.1f},{py:.1f}" for px, py in points)
    parts.append(f'<polyline points="{path}" fill="none" stroke="#0969da" stroke-width="2">'
                 f'<title>Sessions left</title></polyline>')
    count_y = points[-1][1] - 4
    for value in (summary["sessions_total"], 0):  # the scale, but where "N left" would sit on it
        if abs(y_count(value) + 4 - count_y) >= LABEL_GAP:
            parts.append(f'<text x="{WIDTH - RIGHT + 4}" y="{y_count(value) + 4:.1f}" font-size="11" '
                         f'fill="#0969da">{value}</text>')
    parts.append(f'<text x="{WIDTH - RIGHT + 4}" y="{count_y:.1f}" font-size="11" font-weight="bold" '
                 f'fill="#0969da">{summary["sessions_remaining"]} left</text>')
    for event in visits:
        kind = visit_class(event)
        colour = COLOURS[kind]
        vx = x(event["at"])
        when = event["at"].astimezone(tz)
        label = f'{when.day} {when:%b %Y}: {event["service"]} — ' + (
            "counted" if event["counted"] else f'not counted ({event["reason"] or "no package"})')
        fill = colour if kind == "counted" else "white"
        dash = ' stroke-dasharray="3 2"' if kind == "deleted" else ""
        parts.append(f'<circle cx="{vx:.1f}" cy="{VISIT_Y}" r="6" fill="{fill}" stroke="{colour}" '
                     f'stroke-width="2"{dash} data-appointment-id="{event["appointment_id"]}" class="visit {kind}">'
                     f'<title>{escape(label)}</title></circle>')
    lx = LEFT
    for kind, text in LEGEND:
        colour = COLOURS[kind]
        fill = colour if kind == "counted" else "white"
        parts.append(f'<circle cx="{lx + 6}" cy="{TOP + 4}" r="5" fill="{fill}" stroke="{colour}" stroke-width="2"/>')
        parts.append(f'<text x="{lx + 15}" y="{TOP + 8}" font-size="11" fill="#24292f">{text}</text>')
        lx += 30 + 7 * len(text)
    parts.append("</svg>")
    return "".join(parts)


def _month_ticks(start: dt.datetime, end: dt.datetime) -> list[dt.datetime]:
    months = (end.year - start.year) * 12 + end.month - start.month
    step = max(1, months // 8 + 1)
    ticks: list[dt.datetime] = []
    year, month = start.year, start.month
    while True:
        month += step
        while month > 12:
            month -= 12
            year += 1
        tick = start.replace(year=year, month=month, day=1, hour=0, minute=0, second=0, microsecond=0)
        if tick > end:
            return ticks
        ticks.append(tick)

