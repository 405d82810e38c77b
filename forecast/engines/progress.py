"""Progress of a streamed forecast: a tqdm bar on a terminal, plain log lines elsewhere."""

from __future__ import annotations

import logging
import shutil
import sys
import time
from typing import Literal

from forecast.errors import ConfigError

# The engine's logger, not this module's: progress lines belong to the forecast run, whose
# logger name the log format prints and level settings select.
log = logging.getLogger("forecast.engines.local")

ProgressMode = Literal["auto", "bar", "log", "none"]


class Progress:
    """Series done: a tqdm bar on a terminal, plain log lines (every `every_s`) otherwise.

    The total is estimated from the rows read so far against the input's row count, so the
    input needs no extra pass to count its series.
    """

    def __init__(self, total_rows: int | None, mode: ProgressMode = "auto", every_s: float = 10.0):
        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "log"
        if mode not in ("bar", "log", "none"):
            raise ConfigError(f"unknown progress mode {mode!r}; use auto, bar, log or none")
        self.mode, self.total_rows, self.every_s = mode, total_rows, every_s
        self.series = self.rows = 0
        self.started = self._last = time.perf_counter()
        self._bar = None
        if mode == "bar":
            from tqdm import tqdm

            # A terminal that reports no width (some pseudo-terminals) would get an empty bar.
            width = shutil.get_terminal_size((100, 20)).columns
            self._bar = tqdm(desc="forecast", unit="series", ncols=width, file=sys.stderr)

    def estimate(self) -> int | None:
        if not self.total_rows or not self.rows:
            return None
        return max(self.series, round(self.series * self.total_rows / self.rows))

    def update(self, series: int, rows: int) -> None:
        self.series += series
        self.rows += rows
        if self._bar is not None:
            self._bar.total = self.estimate()
            self._bar.update(series)
        elif self.mode == "log" and time.perf_counter() - self._last >= self.every_s:
            self._line()

    def _line(self, done: bool = False) -> None:
        self._last = time.perf_counter()
        elapsed = self._last - self.started
        total = self.series if done else self.estimate()
        of = f" of ~{total:,}" if total and not done else ""
        log.info(
            "forecast: %s%s series%s, %.0f series/s, %.1fs",
            f"{self.series:,}",
            of,
            " (done)" if done else "",
            self.series / max(elapsed, 1e-9),
            elapsed,
        )

    def close(self, done: bool = True) -> None:
        """End the bar; `done=False` (a failed run) leaves out the closing line."""
        if self._bar is not None:
            if done:
                self._bar.total = self.series
                self._bar.refresh()
            self._bar.close()
        elif self.mode == "log" and done:
            self._line(done=True)
