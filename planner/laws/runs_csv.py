"""Read a ladder-runs CSV for fitting. Documented columns:

- `params`  model size N (parameters), > 0
- `tokens`  training tokens D, > 0 (derived as flops / (6·params) when absent and `flops` exists)
- `loss`    loss in nats, > 0
- `flops`   optional training FLOPs (defaults to 6·N·D; IsoFLOP grouping uses it)
- `run`     optional run name (training curves: several rows per run)
- `unique_tokens` optional unique-data budget (for --law data-constrained)
- `non_embedding_params` optional N without the embeddings and an untied LM head (Kaplan et al.
  2020's N); `fit --param-count non-embedding` fits on it, `--law auto` also tries it

`--columns params=model_size,tokens=training_tokens` maps other names onto these; an empty
name (`flops=`) ignores an optional column.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scaleplan.specs.errors import SpecError
from scaleplan.specs.files import read_csv

from .forms import FLOPS_PER_PARAM_TOKEN

REQUIRED = ("params", "loss")
OPTIONAL = ("tokens", "flops", "run", "unique_tokens", "non_embedding_params", "step", "lr")
# step, lr: --law mpl


@dataclass
class Runs:
    N: np.ndarray
    D: np.ndarray
    loss: np.ndarray
    flops: np.ndarray
    run: np.ndarray | None
    unique_tokens: np.ndarray | None
    source: str
    N_non_embedding: np.ndarray | None = None

    def subset(self, mask: np.ndarray) -> Runs:
        pick = lambda a: None if a is None else a[mask]  # noqa: E731
        return Runs(
            self.N[mask],
            self.D[mask],
            self.loss[mask],
            self.flops[mask],
            pick(self.run),
            pick(self.unique_tokens),
            self.source,
            pick(self.N_non_embedding),
        )

    def params(self, param_count: str) -> np.ndarray:
        """N as `param_count` counts it: the `params` column, or `non_embedding_params`."""
        if param_count == "total":
            return self.N
        if self.N_non_embedding is None:
            raise SpecError(
                "--param-count non-embedding needs a non_embedding_params column "
                "(map one with --columns non_embedding_params=NAME)",
                field="non_embedding_params",
                source=self.source,
            )
        return self.N_non_embedding

    def points(self) -> dict[str, list]:
        out: dict[str, list] = {
            "N": self.N.tolist(),
            "D": self.D.tolist(),
            "loss": self.loss.tolist(),
            "flops": self.flops.tolist(),
        }
        if self.run is not None:
            out["run"] = [str(r) for r in self.run]
        if self.unique_tokens is not None:
            out["unique_tokens"] = self.unique_tokens.tolist()
        return out


def parse_column_map(text: str | None) -> dict[str, str]:
    """'params=model_size,tokens=training_tokens' -> {'params': 'model_size', ...}."""
    mapping: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in (text or "").split(","))):
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or key not in REQUIRED + OPTIONAL or (not value and key not in OPTIONAL):
            raise SpecError(
                f"bad mapping {item!r}; use NAME=CSV_COLUMN with NAME in {list(REQUIRED + OPTIONAL)}",
                field="--columns",
            )
        mapping[key] = value
    return mapping


def read_runs(path: str | Path, columns: dict[str, str] | None = None) -> Runs:
    src = str(path)
    columns = columns or {}
    header, rows = read_csv(path)
    name = {k: columns.get(k, k) or "\0ignored" for k in REQUIRED + OPTIONAL}
    for k in REQUIRED:
        if name[k] not in header:
            raise SpecError(
                f"missing column {name[k]!r} (columns: {', '.join(header)}; map with --columns {k}=NAME)",
                field=k,
                source=src,
            )
    if name["tokens"] not in header and name["flops"] not in header:
        raise SpecError(
            f"missing column {name['tokens']!r} (or {name['flops']!r} to derive it)",
            field="tokens",
            source=src,
        )
    if not rows:
        raise SpecError("no data rows", source=src)

    def col(key: str) -> np.ndarray | None:
        if name[key] not in header:
            return None
        out = np.empty(len(rows))
        for i, row in enumerate(rows):
            try:
                out[i] = float(row[name[key]])
            except (TypeError, ValueError):
                raise SpecError(
                    f"row {i + 2}: {row[name[key]]!r} is not a number", field=name[key], source=src
                ) from None
            if not math.isfinite(out[i]) or out[i] <= 0:
                raise SpecError(
                    f"row {i + 2}: must be positive (got {row[name[key]]!r})",
                    field=name[key],
                    source=src,
                )
        return out

    N, L, flops, D, U, N_ne = (
        col("params"),
        col("loss"),
        col("flops"),
        col("tokens"),
        col("unique_tokens"),
        col("non_embedding_params"),
    )
    assert N is not None and L is not None
    if D is None:
        assert flops is not None
        D = flops / (FLOPS_PER_PARAM_TOKEN * N)
    if flops is None:
        flops = FLOPS_PER_PARAM_TOKEN * N * D
    run = np.array([row[name["run"]] for row in rows]) if name["run"] in header else None
    if N_ne is not None and np.any(N_ne > N):
        i = int(np.argmax(N_ne > N))
        raise SpecError(
            f"row {i + 2}: {N_ne[i]:.6g} non-embedding parameters exceed the {N[i]:.6g} of "
            f"{name['params']!r}",
            field=name["non_embedding_params"],
            source=src,
        )
    return Runs(N, D, L, flops, run, U, src, N_ne)


def last_per_run(runs: Runs) -> Runs:
    """Keep each run's row with the most tokens (its final loss)."""
    if runs.run is None:
        raise SpecError("--last-per-run needs a run column", field="run", source=runs.source)
    keep = np.zeros(len(runs.N), dtype=bool)
    for r in np.unique(runs.run):
        idx = np.flatnonzero(runs.run == r)
        keep[idx[np.argmax(runs.D[idx])]] = True
    return runs.subset(keep)


def drop_highest(runs: Runs, k: int) -> Runs:
    """Drop the k highest-loss points (Epoch: `losses < sorted(losses)[-5]` for k = 5)."""
    if k <= 0:
        return runs
    if k >= len(runs.N):
        raise SpecError(
            f"--drop-highest {k} would drop every point", field="--drop-highest", source=runs.source
        )
    keep = np.ones(len(runs.N), dtype=bool)
    keep[np.argsort(runs.loss, kind="stable")[-k:]] = False
    return runs.subset(keep)
