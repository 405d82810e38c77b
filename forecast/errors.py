"""The errors a user can meet, each with its documented exit code (docs/errors.md).

Pipelines end on one of these with the message alone on stderr (`forecast.cli`); anything
else is a bug and keeps its traceback. The codes let a scheduler tell "fix your data" from
"the tracking server is down" without parsing text.
"""

from __future__ import annotations


class ForecastError(Exception):
    """Base of the errors a user can fix; `exit_code` is what the pipelines exit with."""

    exit_code = 1


class ConfigError(ForecastError, ValueError):
    """A bad config value or override (`data.horizon=abc`, an unknown key, a bad policy)."""

    exit_code = 2


# 3 is the promotion gate's "kept the champion": a decision, not an error.
KEPT_CHAMPION_EXIT = 3


class DataValidationError(ForecastError, ValueError):
    """User data breaks the data contract (see DESIGN.md): names the problem, columns, ids, rows."""

    exit_code = 4


class NoHistoryError(DataValidationError):
    """No row of the input is at or before `as_of` (a date before the history starts)."""


class LateRowsError(DataValidationError):
    """Rows with an observed target after `as_of`, refused under `as_of_strict=true`."""


class MissingFutureError(DataValidationError):
    """Series without future-known values over the whole horizon: how many in all, a few named.

    Kept structured so that a streamed forecast can add up its chunks (one message with the
    total, not the first chunk's count) and say which `as_of` cut the input.
    """

    def __init__(
        self,
        count: int,
        named: list[str],
        where: str,
        columns: list[str],
        horizon: int,
        target: str,
        note: str = "",
    ):
        self.count, self.named, self.where, self.note = count, named, where, note
        self.columns, self.horizon, self.target = columns, horizon, target
        super().__init__(self._text())

    def _text(self) -> str:
        shown = self.named[:5]  # a message's worth of series, not one per series
        others = f"; and {self.count - len(shown)} more series" if self.count > len(shown) else ""
        H = self.horizon
        return (
            f"{self.count} series lack future values of {self.columns} for the full horizon of {H} "
            f"steps ({self.where}{self.note}): {'; '.join(shown)}{others}. Give every series its next "
            f"{H} rows with these columns (target {self.target!r} empty) in the input, or in "
            "future=PATH; nothing was written"
        )

    def plus(self, other: MissingFutureError) -> MissingFutureError:
        """Both chunks' series in one error: the total count, the first few named."""
        rest = (self.where, self.columns, self.horizon, self.target, self.note)
        return MissingFutureError(self.count + other.count, self.named + other.named, *rest)

    def cut_at(self, as_of_label: str) -> MissingFutureError:
        """The same error, saying that `as_of` cut each series' history (so its horizon starts there)."""
        note = f"; as_of={as_of_label} cut the input there, so the horizon starts after it"
        rest = (self.where, self.columns, self.horizon, self.target, note)
        return MissingFutureError(self.count, self.named, *rest)


class InputFileError(DataValidationError):
    """An input path that is missing, empty, a directory of nothing, truncated or unreadable."""


class UnsafeCheckpointError(InputFileError):
    """A checkpoint that only a full unpickle (able to run code) could read: refused, never loaded."""


class ModelNotFoundError(ForecastError, LookupError):
    """A `model_uri`, registered model, version or alias that does not exist or is no forecast model."""

    exit_code = 5


class TrackingUnavailableError(ForecastError, ConnectionError):
    """The MLflow tracking server cannot be reached (after the retries)."""

    exit_code = 6


class OutputError(ForecastError, OSError):
    """The output cannot be written (permissions, a file where a folder should be, disk full)."""

    exit_code = 7


class NonFiniteError(ForecastError, ArithmeticError):
    """A model or forecast with NaN or infinite values: never registered, never written."""

    exit_code = 8


EXIT_CODES: dict[int, str] = {
    0: "success",
    1: "unexpected error (a bug: the traceback is printed)",
    2: "configuration error: a bad override, value or unknown key",
    3: "promotion gate kept the champion (not an error)",
    4: "input data error: the table or file breaks the data contract",
    5: "model not found: model_uri, registered name, version or alias",
    6: "tracking server unavailable",
    7: "output cannot be written",
    8: "non-finite model or forecast: nothing was published",
    130: "interrupted (Ctrl-C)",
    143: "terminated (SIGTERM)",
}


def require_int(name: str, value: object, minimum: int = 1) -> int:
    """`value` as an int >= `minimum`, or a ConfigError naming the option (`data.horizon=abc`)."""
    if isinstance(value, bool) or not isinstance(value, int | str | float):
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}") from None
    if number != value and str(number) != str(value).strip():
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if number < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return number
