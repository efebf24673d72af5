"""bench/RESULTS.md holds one `## ` section per benchmark; each script rewrites only its own."""

from __future__ import annotations

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
