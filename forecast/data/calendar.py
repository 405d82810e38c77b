"""Absolute step numbers: where a time stamp lies on its frequency's grid, counted from the epoch.

A model with a learned cycle (`cycle_len`, e.g. 24 for the hour of day in hourly data) needs the
phase of every step it reads and forecasts. The phase is `step mod cycle_len`, and the step of
a window's first forecast fixes all the others, so one int64 per window carries the calendar:
nothing extra to store per row, and a forecast needs no more input than the history itself.
Steps count from 1970-01-01 00:00, so hourly steps mod 24 are the hour of day (UTC clock of
the time stamps) and daily steps mod 7 the day of week (0 = Thursday).
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

# Period aliases for the start/end-anchored offsets pandas has no Period for ("MS" -> "M").
_ANCHORED = re.compile(r"^(\d*)(M|Q|Y|A|BM|BQ|BY)(S|E)(-.*)?$")


def fixed_step(freq: str, unit: str = "ns") -> int | None:
    """The frequency's step as a whole number of `unit` (s, ms, us, ns); None for calendar
    steps without a fixed length (weeks, month ends) or a step that is not whole in `unit`."""
    try:
        step_ns = pd.Timedelta(pd.tseries.frequencies.to_offset(freq)).value
    except ValueError:
        return None
    unit_ns = pd.Timedelta(1, unit=unit).value
    return step_ns // unit_ns if step_ns and step_ns % unit_ns == 0 else None


def step_index(times: np.ndarray | pd.Series, freq: str | int) -> np.ndarray:
    """(n,) int64 step numbers of `times` on the `freq` grid (integer times: times // freq)."""
    values = np.asarray(times)
    if isinstance(freq, int) or values.dtype.kind in "iu":
        step = int(freq) if isinstance(freq, int) else 1
        return values.astype(np.int64) // step
    stamps = pd.DatetimeIndex(values)
    offset = pd.tseries.frequencies.to_offset(freq)
    step_ns = fixed_step(freq)  # fixed steps: h, min, s, D, 15min, ...
    if step_ns:
        ns = stamps.tz_localize(None).as_unit("ns").asi8 if stamps.tz else stamps.as_unit("ns").asi8
        return ns // step_ns
    # Calendar steps (weeks, month starts or ends, quarters, years): count periods instead.
    base = _ANCHORED.sub(lambda m: m.group(2) + (m.group(4) or ""), offset.rule_code)
    try:
        periods = stamps.tz_localize(None).to_period(base) if stamps.tz else stamps.to_period(base)
    except (ValueError, TypeError) as err:
        raise ValueError(
            f"cannot number the steps of frequency {freq!r} for a learned cycle; use a fixed step "
            "(h, D, 15min, ...) or a week, month, quarter or year frequency, or set model.cycle_len=0"
        ) from err
    return periods.asi8.astype(np.int64) // max(offset.n, 1)


# Seasonal period per calendar frequency (pandas rule codes without their anchor).
_SEASONS = {"W": 52, "M": 12, "MS": 12, "ME": 12, "BM": 12, "BMS": 12, "BME": 12, "SM": 24, "SMS": 24,
            "Q": 4, "QS": 4, "QE": 4, "BQ": 4, "BQS": 4, "BQE": 4, "Y": 1, "YS": 1, "YE": 1, "A": 1, "AS": 1,
            "B": 5, "C": 5}  # fmt: skip


def season_length_for(freq: str | int | None) -> int:
    """The seasonal period a frequency implies: a day of sub-daily steps (hourly 24, 15min 96,
    down to minutes), a week of days (7; business days 5), a year of weeks (52), months (12) or
    quarters (4); 1 for years, seconds, integer steps and steps that divide none of these.

    MASE and the seasonal-naive baseline use it when `data.season_length` is not set: with 1 the
    "seasonal" naive of hourly data would be the plain last value.
    """
    if freq is None or isinstance(freq, int):
        return 1
    offset = pd.tseries.frequencies.to_offset(freq)
    step_ns = fixed_step(freq)
    day_ns = 86_400 * 10**9
    if step_ns and step_ns < day_ns:  # a day of steps, down to minutes (1440); finer: none
        return day_ns // step_ns if day_ns % step_ns == 0 and step_ns >= 60 * 10**9 else 1
    if step_ns and step_ns % day_ns == 0:  # whole days: a week of them, when they divide it
        days = step_ns // day_ns
        return 7 // days if 7 % days == 0 and days < 7 else (52 if days == 7 else 1)
    code = offset.rule_code.split("-")[0]
    season = _SEASONS.get(code, 1)
    return max(season // max(offset.n, 1), 1) if season % max(offset.n, 1) == 0 else 1
