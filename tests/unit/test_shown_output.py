"""Long failure text in the JUnit XML and on the terminal: its start and end, the cut marked
and named, never starting mid-line; the results file keeps the whole."""

from __future__ import annotations

import re

from testfleet.reports.results_file import shown


def test_short_text_is_whole():
    """Nothing is cut, and nothing marked, under the limit."""
    assert shown("a\nb\n", limit=100) == "a\nb\n"


def test_long_text_keeps_whole_lines_at_both_ends_and_marks_the_cut():
    """The kept start ends at a line's end, the kept end starts at a line's start, and the
    marker says how much was cut and where the whole is."""
    text = "".join(f"line {i:04d}\n" for i in range(1000))
    out = shown(text, limit=400, whole_in="results.json")
    head, marker, tail = re.split(
        r"(\[\.\.\. \d+ characters cut; the whole is in results\.json\]\n)", out
    )
    assert head.startswith("line 0000\n")
    assert head.endswith("\n")
    assert tail.startswith("line ")
    assert tail.endswith("line 0999\n")
    number = re.search(r"\d+", marker)
    assert number is not None
    cut = int(number.group())
    assert cut == len(text) - len(head) - len(tail)
    assert len(out) <= 400 + len(marker)


def test_one_long_line_is_cut_inside_it():
    """Text without line breaks is still cut, at the limit."""
    out = shown("x" * 50_000, limit=1000, whole_in="r")
    assert "[... 49000 characters cut; the whole is in r]" in out
