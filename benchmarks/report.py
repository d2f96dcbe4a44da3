"""Regenerate marked sections of BENCHMARKS.md from result files."""

from __future__ import annotations

from pathlib import Path

BENCHMARKS_MD = Path(__file__).parent.parent / "BENCHMARKS.md"


def replace_section(name: str, body: str) -> None:
    """Replace the text between `<!-- name:start -->` and `<!-- name:end -->` in BENCHMARKS.md."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = BENCHMARKS_MD.read_text(encoding="utf-8")
    if start not in text or end not in text:
        raise ValueError(f"{BENCHMARKS_MD} has no {start} … {end} markers for section {name!r}")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    BENCHMARKS_MD.write_text(f"{head}{start}\n{body}\n{end}{tail}", encoding="utf-8")
