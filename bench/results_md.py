"""bench/RESULTS.md holds one `## ` section per benchmark; each script rewrites only its own."""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def replace_section(heading: str, section: str, path: Path = RESULTS) -> None:
    """Put `section` (which starts with `heading`) in place of that heading's section, or append it."""
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    start = text.find(heading)
    if start == -1:
        text = text.rstrip() + "\n\n" + section + "\n"
    else:
        nxt = text.find("\n## ", start + len(heading))
        rest = "\n\n" + text[nxt + 1 :] if nxt != -1 else "\n"
        text = text[:start] + section.rstrip("\n") + rest  # one blank line between sections
    path.write_text(text)


def publish(heading: str, section: str, write: bool, dropped: Sequence[str] = ()) -> None:
    """Print a section (and what was not converted, on stderr); write it into RESULTS.md."""
    print(section)
    if dropped:
        print("not converted: " + "; ".join(dropped), file=sys.stderr)
    if write:
        replace_section(heading, section)


def table_rows(text: str, heading: str) -> list[tuple[str, dict[str, str]]]:
    """(title, row) for every data row of the Markdown tables in `text`, each under the last
    line matching the regex `heading` (its first group is the title); rows before any such
    heading are skipped."""
    out: list[tuple[str, dict[str, str]]] = []
    title, header = "", []
    for line in text.splitlines():
        if m := re.match(heading, line):
            title, header = m.group(1).strip(), []
        elif line.lstrip().startswith("|") and not set(line.strip()) <= set("|-: "):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not header:
                header = cells
            elif title:
                out.append((title, dict(zip(header, cells, strict=False))))
    return out
