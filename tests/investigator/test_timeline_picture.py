"""The investigation's SVG timeline: well-formed, one mark per visit, coloured by outcome."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from tally.clinic.actions import visits
from tally.staff.timeline_svg import render_timeline

SVG = "{http://www.w3.org/2000/svg}"


def test_the_picture_marks_every_visit_with_its_outcome_and_shades_gaps(history, owner, clinic):
    pp, _ = history.sell(1, 1)
    for month, day in [(1, 5), (1, 12), (1, 19), (1, 26), (4, 6)]:
        history.visit(month, day)
    history.visit(4, 13, no_charges=True)
    doomed = history.book(4, 20)
    visits.do_delete_appointment(acting_user=owner, appointment=doomed, reason="test")
    investigation, _ = history.investigate(pp, expected_used=8)
    svg = render_timeline(investigation, clinic.tz)
    root = ET.fromstring(svg)
    marks = [c for c in root.iter(f"{SVG}circle") if "visit" in (c.get("class") or "")]
    classes = sorted(c.get("class").split()[1] for c in marks)
    assert classes == ["counted"] * 5 + ["deleted", "not_counted"]
    gaps = [r for r in root.iter(f"{SVG}rect")]
    assert len(gaps) == 1
    assert "5 left" in svg  # 10 sessions, 5 counted
    assert root.find(f"{SVG}title").text == "Timeline of 10 x Acupuncture 60"


def test_the_count_label_never_sits_on_the_scale_labels(history, clinic):
    """"10 left" was drawn 8 px above the scale's "10" (and "9 left" 1 px from it, "0 left" on
    the "0"): two numbers on top of each other, at the very end of the line staff read."""
    pp, _ = history.sell(1, 1)
    for used in (0, 1):  # 10 left and 9 left, at the top of the scale
        if used:
            history.visit(1, 5)
        investigation, _ = history.investigate(pp)
        root = ET.fromstring(render_timeline(investigation, clinic.tz))
        labels = [t for t in root.iter(f"{SVG}text") if float(t.get("x")) > 900]
        count = next(t for t in labels if (t.text or "").endswith(" left"))
        assert count.text == f"{10 - used} left"
        for scale in labels:
            if scale is not count:
                assert abs(float(scale.get("y")) - float(count.get("y"))) >= 11, (scale.text, count.text)
