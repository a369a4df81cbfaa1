"""Step lines and progress bars on stderr, so long work shows where it is.

Every command that runs for more than a few seconds says which step it is in (``[2/5] training
the audit classifier``) and, inside a step, draws a bar with a time estimate (tqdm). Library
functions take a :class:`Progress` (default: quiet) and the CLI passes one built from
``--quiet``; nothing here imports click, so the library stays usable from notebooks and tests.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import TextIO, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


class Progress:
    """Where a long job is: numbered step lines and tqdm bars, on ``stream`` (stderr).

    Args:
        quiet: print nothing (library default; ``--quiet`` on the command line).
        steps: how many steps the job has, for the ``[k/n]`` prefix (0 = no prefix).
        stream: where to write (stderr, so stdout stays the command's result).
    """

    def __init__(self, quiet: bool = True, steps: int = 0, stream: TextIO | None = None) -> None:
        self.quiet = bool(quiet)
        self.steps = int(steps)
        self.stream = stream if stream is not None else sys.stderr
        self._done = 0
        self._started = time.monotonic()

    def step(self, text: str) -> None:
        """Start the next step: one line ``[k/n] text (elapsed)``."""
        self._done += 1
        if self.quiet:
            return
        prefix = f"[{self._done}/{self.steps}] " if self.steps else ""
        elapsed = time.monotonic() - self._started
        print(f"{prefix}{text} ({elapsed:.0f} s so far)", file=self.stream, flush=True)

    def note(self, text: str) -> None:
        """One line of information inside a step."""
        if not self.quiet:
            print(text, file=self.stream, flush=True)

    def bar(self, iterable: Iterable[T] | None = None, total: int | None = None, desc: str = "") -> tqdm:
        """A tqdm bar (elapsed, rate and estimate) over ``iterable`` or ``total`` units; silent
        when quiet. Use as an iterator or as a context manager with ``.update(n)``."""
        return tqdm(
            iterable, total=total, desc=desc, file=self.stream, disable=self.quiet, leave=False,
            dynamic_ncols=True, mininterval=0.5,
        )

    def track(self, iterable: Iterable[T], total: int | None = None, desc: str = "") -> Iterator[T]:
        """``for item in progress.track(items, desc=...)``: a bar over a loop."""
        yield from self.bar(iterable, total=total, desc=desc)


#: The silent default for library calls that are not given a :class:`Progress`.
QUIET = Progress(quiet=True)
