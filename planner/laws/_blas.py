"""Run tiny optimisations with single-threaded OpenBLAS. L-BFGS-B on 5 parameters makes many
small BLAS calls; a multi-threaded OpenBLAS spends most of that time waking threads (4-5x slower
on a busy 2-core machine). Same idea as threadpoolctl, without the dependency; a no-op when the
bundled OpenBLAS libraries are not found."""

from __future__ import annotations

import ctypes
import glob
import os
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

_SUFFIXES = ("", "64_")


@cache
def _controls() -> list[tuple]:
    import numpy
    import scipy

    found = []
    for mod in (numpy, scipy):
        site = os.path.dirname(os.path.dirname(mod.__file__ or ""))
        for path in sorted(
            set(glob.glob(os.path.join(site, f"{mod.__name__}.libs", "*openblas*.so*")))
        ):
            try:
                lib = ctypes.CDLL(path)
            except OSError:
                continue
            for prefix in ("scipy_openblas", "openblas"):
                for suffix in _SUFFIXES:
                    get = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
                    put = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
                    if get is not None and put is not None:
                        found.append((get, put))
    return found


@contextmanager
def single_thread_blas() -> Iterator[None]:
    controls = _controls()
    before = [get() for get, _ in controls]
    for _, put in controls:
        put(1)
    try:
        yield
    finally:
        for (_, put), n in zip(controls, before, strict=True):
            put(n)
