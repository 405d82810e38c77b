"""Translate Hydra sweep overrides into Optuna distributions, and trial values back."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import (
    ChoiceSweep,
    IntervalSweep,
    Override,
    Quote,
    QuotedString,
    RangeSweep,
    Transformer,
)
from hydra.errors import HydraException
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

_CATEGORICAL_TYPES = (str, int, float, bool, type(None))
_ALLOWED_TAGS = {"choice": set(), "range": {"log"}, "interval": {"log", "int"}}
_PARSER = OverridesParser.create()


@dataclass
class SearchSpace:
    """What the sweeper samples per trial and what it passes to every job unchanged."""

    distributions: dict[str, BaseDistribution] = field(default_factory=dict)
    # Non-sweep overrides, keyed like `distributions`, kept as the user wrote them.
    fixed: dict[str, str] = field(default_factory=dict)
    # Sweep expressions as written, keyed like `distributions`: {"x": "choice(1, 2)"}.
    expressions: dict[str, str] = field(default_factory=dict)


def parse_search_space(overrides: Sequence[str]) -> SearchSpace:
    """Split overrides into Optuna distributions and pass-through overrides; later keys win."""
    space = SearchSpace()
    for override in _PARSER.parse_overrides(list(overrides)):
        name = override.get_key_element()
        space.distributions.pop(name, None)
        space.fixed.pop(name, None)
        space.expressions.pop(name, None)
        if override.is_sweep_override():
            space.distributions[name] = to_distribution(override)
            assert override.input_line is not None
            space.expressions[name] = override.input_line.split("=", 1)[1].strip()
        else:
            assert override.input_line is not None
            space.fixed[name] = override.input_line
    return space


def to_distribution(override: Override) -> BaseDistribution:
    """Map one sweep override (choice/range/interval, optionally tagged) to a distribution."""
    name = override.get_key_element()
    sweep = override.value()
    try:
        if isinstance(sweep, ChoiceSweep):
            _check_tags(sweep.tags, "choice")
            return CategoricalDistribution(_choices(sweep))
        if isinstance(sweep, RangeSweep):
            _check_tags(sweep.tags, "range")
            return _range_distribution(sweep)
        if isinstance(sweep, IntervalSweep):
            _check_tags(sweep.tags, "interval")
            return _interval_distribution(sweep)
        raise ValueError("only choice(...), range(...) and interval(...) sweeps are supported")
    except ValueError as e:
        raise ValueError(f"Search space of '{name}' ({override.input_line}): {e}") from None


def _check_tags(tags: set[str], form: str) -> None:
    unknown = tags - _ALLOWED_TAGS[form]
    if unknown:
        allowed = sorted(_ALLOWED_TAGS[form]) or "none"
        raise ValueError(f"unsupported tag(s) {sorted(unknown)} for {form}(); allowed: {allowed}")


def _choices(sweep: ChoiceSweep) -> list[Any]:
    for choice in sweep.list:
        if not isinstance(choice, _CATEGORICAL_TYPES):
            raise ValueError(f"choice() options must be str, int, float, bool or null, got {choice!r}")
    return list(sweep.list)


def _range_distribution(sweep: RangeSweep) -> BaseDistribution:
    # Hydra's range() excludes `stop` like Python's, Optuna's `high` is inclusive:
    # take the bounds from the values range() really yields.
    values = list(sweep.range())
    if not values:
        raise ValueError("range() is empty")
    low, high, step = min(values), max(values), abs(sweep.step)
    log = "log" in sweep.tags
    if all(isinstance(x, int) for x in (sweep.start, sweep.stop, sweep.step)):
        if log and step != 1:
            raise ValueError("tag(log, range()) needs step 1 (Optuna has no stepped log ints)")
        return IntDistribution(low, high, log=log, step=step)
    if log:
        raise ValueError("log is not supported with a float step; use tag(log, interval(a, b))")
    return FloatDistribution(float(low), float(high), step=float(step))


def _interval_distribution(sweep: IntervalSweep) -> BaseDistribution:
    # Hydra parses interval() bounds as floats even when written as ints, so integer
    # intervals are requested explicitly with tag(int, ...).
    assert sweep.start is not None and sweep.end is not None
    log = "log" in sweep.tags
    if "int" in sweep.tags:
        if not (float(sweep.start).is_integer() and float(sweep.end).is_integer()):
            raise ValueError("tag(int, interval(a, b)) needs integral bounds")
        return IntDistribution(int(sweep.start), int(sweep.end), log=log)
    return FloatDistribution(sweep.start, sweep.end, log=log)


def to_override_value(value: Any) -> str:
    """Render a sampled value so Hydra parses it back to the same value and type."""
    if not isinstance(value, str):
        return Transformer.str(value)  # null, true/false, ints, floats (repr round-trips)
    # Plain `lstm` reads best; strings that need escaping or would parse as another
    # type ("32", "true", "null") are single-quoted.
    if Transformer.str(value) == value and _parses_back(value):
        return value
    return QuotedString(text=value, quote=Quote.single).with_quotes()


def _parses_back(plain: str) -> bool:
    try:
        return _PARSER.parse_override(f"k={plain}").value() == plain
    except HydraException:
        return False
