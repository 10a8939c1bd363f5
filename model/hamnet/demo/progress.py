"""What a build prints while it runs: per-stage timings and progress bars.

Why a module of its own: a default build takes about ten minutes, so it reports every stage
and every video as it goes, and the stage timings end up in the build report. tqdm is
imported only when a bar is actually shown (``verbose``), so quiet builds (tests, the
service's first start) never need it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class Stages:
    """Per-stage wall-clock timings, printed as the build goes."""

    def __init__(self, verbose: bool) -> None:
        self.verbose = verbose
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        if self.verbose:
            print(f"== {name}", flush=True)
        t0 = time.perf_counter()
        yield
        self.seconds[name] = round(time.perf_counter() - t0, 2)
        if self.verbose:
            print(f"   {name}: {self.seconds[name]:.1f} s", flush=True)


def progress_bar(total: int, desc: str, unit: str, verbose: bool) -> Callable[[int], None]:
    """A ``done -> None`` progress callback (a tqdm bar when verbose)."""
    if not verbose:
        return lambda done: None
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit=unit)

    def update(done: int) -> None:
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return update
