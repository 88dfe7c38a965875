"""The one progress bar of a run (suite x variant): its cases done out of all it has, its errored cases, and the rate.

A run's bar counts every answer the run needs (cases x samples), starting from those it already has (stored by an
earlier attempt, or answered from the cache), so a resumed run shows where it stands. Errored answers count as done
(the run will not ask again) and are shown beside the rate as ``errors=N``. An lm-eval task reports all its
documents at once when it returns, so its bar moves once. The bar is written to stderr, on only when asked
(``--progress``) or, by default, when stderr is a terminal: a log or CI output gets no carriage-return noise, but
a plain line every 30 s (``enabled=None``: where stderr is not a terminal and nothing was asked), so that a CI log
shows a long run moving.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

from tqdm import tqdm

PLAIN_EVERY_S = 30.0  # a plain progress line this often where stderr is not a terminal


class RunBar:
    """``with RunBar(...) as bar: bar.done(errored=...)`` once per answer."""

    def __init__(self, suite: str, variant: str, total: int | None, already: int = 0, *, enabled: bool | None,
                 file: TextIO | None = None, plain_every_s: float = PLAIN_EVERY_S) -> None:
        """``enabled``: a bar; False: nothing; None: a plain line every ``plain_every_s`` seconds while it runs."""
        self.errors = 0
        self.n, self.total, self.desc = already, total, f"{suite} × {variant}"  # (a disabled tqdm keeps none of them)
        self._file = file or sys.stderr
        self._bar = tqdm(total=total, initial=already, desc=f"{suite} × {variant}", unit="case", disable=not enabled,
                         file=self._file, dynamic_ncols=True)
        self._bar.set_postfix_str("errors=0", refresh=False)
        self._stop = threading.Event()
        self._start, self._already = time.monotonic(), already
        self._ticker = None
        if enabled is None:
            self._ticker = threading.Thread(target=self._plain, args=(plain_every_s,), daemon=True)
            self._ticker.start()

    def line(self) -> str:
        """Where the run stands, as one plain line."""
        rate = (self.n - self._already) / max(time.monotonic() - self._start, 1e-9)
        total = self.total if self.total is not None else "?"
        return f"{self.desc}: {self.n}/{total} cases, errors={self.errors}, {rate:.2f} cases/s"

    def _plain(self, every_s: float) -> None:
        while not self._stop.wait(every_s):
            print(self.line(), file=self._file, flush=True)

    def done(self, n: int = 1, errored: int = 0) -> None:
        """``n`` more answers arrived, ``errored`` of them errors."""
        if errored:
            self.errors += errored
            self._bar.set_postfix_str(f"errors={self.errors}", refresh=False)
        self.n += n
        self._bar.update(n)

    def finish(self, n: int, errored: int) -> None:
        """All at once: the run's ``n`` answers (an lm-eval task's documents), ``errored`` of them errors."""
        if self.total is None:
            self.total = self._bar.total = self.n + n
        self.done(n, errored)

    def close(self) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
        self._bar.close()

    def __enter__(self) -> RunBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
