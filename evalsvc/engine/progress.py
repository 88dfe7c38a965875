"""The one progress bar of a run (suite x variant): its cases done out of all it has, its errored cases, and the rate.

A run's bar counts every answer the run needs (cases x samples), starting from those it already has (stored by an
earlier attempt, or answered from the cache), so a resumed run shows where it stands. Errored answers count as done
(the run will not ask again) and are shown beside the rate as ``errors=N``. An lm-eval task reports all its
documents at once when it returns, so its bar moves once. The bar is written to stderr, on only when asked
(``--progress``) or, by default, when stderr is a terminal: a log or CI output gets no carriage-return noise.
"""

from __future__ import annotations

import sys
from typing import TextIO

from tqdm import tqdm


class RunBar:
    """``with RunBar(...) as bar: bar.done(errored=...)`` once per answer."""

    def __init__(self, suite: str, variant: str, total: int | None, already: int = 0, *, enabled: bool,
                 file: TextIO | None = None) -> None:
        self.errors = 0
        self._bar = tqdm(total=total, initial=already, desc=f"{suite} × {variant}", unit="case", disable=not enabled,
                         file=file or sys.stderr, dynamic_ncols=True)
        self._bar.set_postfix_str("errors=0", refresh=False)

    def done(self, n: int = 1, errored: int = 0) -> None:
        """``n`` more answers arrived, ``errored`` of them errors."""
        if errored:
            self.errors += errored
            self._bar.set_postfix_str(f"errors={self.errors}", refresh=False)
        self._bar.update(n)

    def finish(self, n: int, errored: int) -> None:
        """All at once: the run's ``n`` answers (an lm-eval task's documents), ``errored`` of them errors."""
        if self._bar.total is None:
            self._bar.total = self._bar.n + n
        self.done(n, errored)

    def close(self) -> None:
        self._bar.close()

    def __enter__(self) -> RunBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
