"""The built-in offline text corpora, named by `DataSource.name`.

- `web`  : general text = the source files of the Python standard library installed on this
           machine (code, comments and docstrings, as found), a stand-in for crawled web text.
- `hq`   : a higher-quality subset = only the docstrings of those files (module, class and
           function documentation: edited English prose), a stand-in for curated text used for
           annealing.
- `code` : the same files as `web` (an alias kept for plans that name a code source).

A `DataSource` with a `path` reads that file, or every `*.txt`/`*.md`/`*.py` file below that
folder, instead. Documents are returned in a deterministic (sorted) order; the size is capped
so tiny CPU runs stay fast.
"""

from __future__ import annotations

import ast
import sysconfig
from collections.abc import Iterator
from pathlib import Path

from scaleplan.specs.errors import SpecError

BUILTIN_SOURCES = ("web", "hq", "code")
_SKIP_DIRS = {"site-packages", "test", "tests", "idlelib", "__pycache__", "lib2to3", "turtledemo"}
DEFAULT_MAX_BYTES = 1_000_000


def stdlib_files() -> list[Path]:
    """Every `.py` file of the standard library, sorted, test suites excluded."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = [
        p for p in root.rglob("*.py") if not (_SKIP_DIRS & set(p.relative_to(root).parts[:-1]))
    ]
    return sorted(files)


def _docstrings(source: str) -> Iterator[str]:
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            doc = ast.get_docstring(node, clean=True)
            if doc and len(doc) >= 40:
                yield doc


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return ""


def documents(name: str, path: str | None = None, max_bytes: int = DEFAULT_MAX_BYTES) -> list[str]:
    """The documents of one source, in a fixed order, up to about `max_bytes` of text."""
    if path is not None:
        p = Path(path)
        if not p.exists():
            raise SpecError(f"data path {path} does not exist", field=f"data.{name}.path")
        files = (
            [p]
            if p.is_file()
            else sorted(f for ext in ("*.txt", "*.md", "*.py") for f in p.rglob(ext))
        )
        texts = (_read(f) for f in files)
    elif name in ("web", "code"):
        texts = (_read(f) for f in stdlib_files())
    elif name == "hq":
        texts = (doc for f in stdlib_files() for doc in _docstrings(_read(f)))
    else:
        raise SpecError(
            f"unknown data source '{name}' without a path; built-in: "
            f"{', '.join(BUILTIN_SOURCES)} (text) and sft, dpo, rlvr (tasks)",
            field="data.name",
        )
    docs: list[str] = []
    total = 0
    for text in texts:
        if not text.strip():
            continue
        docs.append(text)
        total += len(text)
        if total >= max_bytes:
            break
    if not docs:
        raise SpecError(f"data source '{name}' has no text", field="data.name")
    return docs
