"""Run a pipeline's Hydra app so that a user's mistake ends as one line and a documented exit code.

Hydra prints its own multi-line report (or a stripped traceback) for any exception and exits
with 1, so a scheduler cannot tell bad data from a dead server. `run_app` lets exceptions
through Hydra (`HYDRA_FULL_ERROR=1` for Hydra itself) and turns the ones a user can fix
(`forecast.errors.ForecastError`, Hydra's config errors) into `error: <message>` on stderr and
their exit code. Anything else is a bug and keeps its traceback. With `HYDRA_FULL_ERROR=1` or
`FORECAST_DEBUG=1` set by the user every error keeps its traceback.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import sys
from collections.abc import Callable
from typing import Any

from forecast.errors import ConfigError, ForecastError

log = logging.getLogger(__name__)

_DEBUG_VARS = ("HYDRA_FULL_ERROR", "FORECAST_DEBUG")


_OURS = "_FORECAST_SET_HYDRA_FULL_ERROR"  # set by run_app, inherited by DDP's child processes


def debug_requested() -> bool:
    """Whether the user (not run_app in a parent process) asked for full tracebacks."""
    names = _DEBUG_VARS[1:] if os.environ.get(_OURS) else _DEBUG_VARS
    return any(os.environ.get(name, "") not in ("", "0") for name in names)


def _config_error(err: BaseException) -> ConfigError | None:
    """Hydra's and OmegaConf's composition errors (unknown key, bad override) as a ConfigError."""
    from hydra.errors import HydraException, MissingConfigException, OverrideParseException
    from omegaconf.errors import OmegaConfBaseException

    if isinstance(err, MissingConfigException | OverrideParseException | OmegaConfBaseException):
        pass
    elif type(err).__name__ == "ConfigCompositionException" and isinstance(err, HydraException):
        pass
    else:
        return None
    text = str(err)
    cause = err.__cause__
    if isinstance(cause, OmegaConfBaseException) and str(cause) and str(cause) not in text:
        text = f"{text} {cause}"
    # "Could not override 'foo'.\nTo append to your config use +foo=1\nKey 'foo' is not in
    # struct\n    full_key: foo ..." -> one line.
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    unknown = re.match(r"Could not override '([^']+)'", lines[0]) if lines else None
    if unknown and "not in struct" in text:
        key = unknown[1]
        return ConfigError(
            f"unknown config key '{key}': check its spelling against `--cfg job` "
            f"(to add a key the config does not have, use +{key}=...)"
        )
    typed = re.search(r"Key '([^']+)' not in '(\w+)'", text)
    if unknown and typed:  # a typed group (forecast.config): name the keys it has
        from forecast import config

        schema = getattr(config, typed[2], None)
        valid = f"; valid: {', '.join(schema.keys())}" if isinstance(schema, type) else ""
        return ConfigError(f"unknown config key '{unknown[1]}'{valid}")
    wrong = re.search(r"full_key: (\S+)", text)
    value = re.search(r"(Value '.*?' (?:of type .*? could not be converted to \w+|is not a valid \w+))", text)
    if wrong and value:  # a wrong type for a typed option
        return ConfigError(f"{wrong[1]}: {value[1]}")
    return ConfigError("; ".join(lines))


def user_error(err: BaseException) -> ForecastError | None:
    """The user-facing error behind `err` (it may be wrapped by Hydra's instantiate), or None."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ForecastError):
            return current
        config = _config_error(current)
        if config is not None:
            return config
        current = current.__cause__ or current.__context__
    return None


def one_line(err: BaseException) -> str:
    """The message on one line (embedded newlines joined), as a log file or a pager wants it."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return "; ".join(lines) or type(err).__name__


class Terminated(BaseException):
    """SIGTERM (a scheduler stopping the job), raised like Ctrl-C so that clean-up runs."""


def _terminate_on_sigterm():
    """Raise Terminated on SIGTERM (main thread only); returns the previous handler or None."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum, frame):
        raise Terminated()

    return signal.signal(signal.SIGTERM, handler)


class _HideHydraJobBanner:
    """stderr without Hydra's "Error executing job with overrides: [...]" line.

    Hydra writes it straight to sys.stderr before re-raising a job's exception (JobReturn's
    return_value), so it would stand above our one-line error; no Hydra option turns it off.
    """

    _BANNER = "Error executing job with overrides:"

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        if text.startswith(self._BANNER):
            return len(text)
        return self._stream.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def run_app(app: Callable[[], Any]) -> None:
    """Call a `@hydra.main` function; exit with one line and the error's code on user errors."""
    debug = debug_requested()
    if not os.environ.get("HYDRA_FULL_ERROR"):
        os.environ["HYDRA_FULL_ERROR"] = "1"  # exceptions reach us, not Hydra's report
        os.environ[_OURS] = "1"
    stderr = sys.stderr
    if not debug:
        sys.stderr = _HideHydraJobBanner(stderr)
    previous = _terminate_on_sigterm()
    try:
        app()
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    except Terminated:
        print("error: terminated (SIGTERM)", file=sys.stderr)
        sys.exit(143)
    except SystemExit as done:
        # Lightning turns SIGTERM during a fit into SIGTERMException, a SystemExit of code 0.
        if type(done).__name__ == "SIGTERMException":
            print("error: terminated (SIGTERM)", file=sys.stderr)
            sys.exit(143)
        raise
    except Exception as err:
        error = None if debug else user_error(err)
        if error is None:
            raise
        print(f"error: {one_line(error)}", file=sys.stderr)
        sys.exit(error.exit_code)
    finally:
        sys.stderr = stderr
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
