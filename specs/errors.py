"""One error type for every bad input: it names where (file, field path) and why.

The CLI turns a `SpecError` into one line on stderr and exit code 2, with no traceback.
"""

from __future__ import annotations


class SpecError(ValueError):
    """A user input is invalid. `field` is a dotted path (`layout.tp`), `source` a file name."""

    exit_code = 2

    def __init__(self, reason: str, field: str | None = None, source: str | None = None) -> None:
        self.reason = reason
        self.field = field
        self.source = source
        super().__init__(self.message)

    @property
    def message(self) -> str:
        where = ": ".join(part for part in (self.source, self.field) if part)
        return f"{where}: {self.reason}" if where else self.reason

    def with_source(self, source: str) -> SpecError:
        return SpecError(self.reason, self.field, self.source or source)


class NotImplementedFeature(SpecError):
    """A feature the user asked for exists in the vocabulary but not (yet) in this tool."""
