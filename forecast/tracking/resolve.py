"""A logged or registered model, found: `models:/NAME@ALIAS`, `models:/NAME/VERSION` or
`runs:/ID/model` resolved to its local folder, pinned to a version, with retries while the
tracking server is briefly unreachable and one-line errors for everything else.

The batch job, the backtest, the promotion gate and the Python API (`forecast.Model.load`) all
load models through here.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import mlflow
from mlflow import MlflowClient
from mlflow.models import Model

from forecast.cli import one_line
from forecast.errors import ConfigError, ForecastError, ModelNotFoundError, TrackingUnavailableError
from forecast.tracking import pyfunc as pyfunc_loader
from forecast.tracking.http import auth_error, connection_problem, http_policy, refused_login, server_name
from forecast.tracking.store import require_store

if TYPE_CHECKING:
    from forecast.forecaster import Forecaster, Runtime

log = logging.getLogger(__name__)

T = TypeVar("T")
_REGISTRY_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")


@dataclass(frozen=True)
class ModelRef:
    """What the forecast came from, written into the output's metadata."""

    uri: str
    name: str
    version: str
    run_id: str

    def metadata(self) -> dict[str, str]:
        return {f"forecast.{k}": v for k, v in asdict(self).items()}

    @property
    def pinned_uri(self) -> str:
        """The same model by version, so that an alias moved mid-run changes nothing."""
        return f"models:/{self.name}/{self.version}" if self.name and self.version else self.uri


@dataclass(frozen=True)
class LoadRetry:
    """How model loading rides out a tracking server that is briefly unreachable.

    `retries` more attempts after the first, `backoff_s`, 2x, 4x ... apart; each HTTP request
    waits at most `timeout_s` (MLflow's own retries are turned off for the call, so that these
    are the only ones: MLflow alone retried for minutes).
    """

    retries: int = 3
    backoff_s: float = 2.0
    timeout_s: int = 10

    def __post_init__(self) -> None:
        """Bad values are a config error naming the option, before anything is loaded."""
        checks = [
            ("load_retries", self.retries, int, 0),
            ("load_backoff_s", self.backoff_s, int | float, 0),
            ("load_timeout_s", self.timeout_s, int, 1),
        ]
        for name, value, kind, low in checks:
            if isinstance(value, bool) or not isinstance(value, kind) or value < low:
                raise ConfigError(f"{name} must be a number >= {low}, got {value!r}")


# MLflow error codes that mean "there is no such model, version, alias or run".
_NOT_FOUND = {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"}


def _resolve_once(model_uri: str) -> tuple[Path, ModelRef]:
    """One attempt of `resolve_model`: MLflow's errors pass through unchanged."""
    name, version, uri = "", "", model_uri
    match = _REGISTRY_URI.match(model_uri)
    if match:  # pin the version first, so that an alias moved meanwhile changes nothing
        client = MlflowClient()
        name = match["name"]
        if match["alias"]:
            mv = client.get_model_version_by_alias(name, match["alias"])
        else:
            mv = client.get_model_version(name, match["version"])
        version = str(mv.version)
        uri = f"models:/{name}/{version}"
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    try:
        if not local.is_dir():
            raise FileNotFoundError(local)
        meta = Model.load(local)
    except Exception as err:  # a file, or a folder without an MLmodel: downloaded, so not a network error
        raise ModelNotFoundError(f"{model_uri} is not an MLflow model (no MLmodel file there)") from err
    flavor = meta.flavors.get("python_function", {})
    if flavor.get("loader_module") != pyfunc_loader.__name__:
        raise ModelNotFoundError(
            f"{model_uri} is not a forecast model (pyfunc loader {flavor.get('loader_module')!r}, "
            f"not {pyfunc_loader.__name__!r}); give a model logged by pipelines/train.py"
        )
    return local / flavor["data"], ModelRef(
        uri=model_uri, name=name, version=version, run_id=meta.run_id or ""
    )


def resolve_model(model_uri: str, retry: LoadRetry | None = None) -> tuple[Path, ModelRef]:
    """Download a logged or registered model; return its forecaster folder and what it is.

    A tracking server that cannot be reached is retried with exponential backoff (`retry`),
    then a TrackingUnavailableError; a model, version, alias or run that does not exist, or
    is no forecast model, is a ModelNotFoundError at once.
    """
    log.info("loading model %s", model_uri)
    return _retrying(model_uri, retry or LoadRetry(), lambda: _resolve_once(model_uri))


def pin_model(model_uri: str, retry: LoadRetry | None = None) -> ModelRef:
    """The version an alias names now, without a download: cheap enough to decide "already done"."""
    match = _REGISTRY_URI.match(model_uri)
    if not match:
        return ModelRef(uri=model_uri, name="", version="", run_id="")

    def once() -> ModelRef:
        client = MlflowClient()
        if match["alias"]:
            mv = client.get_model_version_by_alias(match["name"], match["alias"])
        else:
            mv = client.get_model_version(match["name"], match["version"])
        return ModelRef(uri=model_uri, name=match["name"], version=str(mv.version), run_id=mv.run_id or "")

    return _retrying(model_uri, retry or LoadRetry(), once)


def _retrying(model_uri: str, retry: LoadRetry, once: Callable[[], T]) -> T:
    """`once()`, retried while the server is unreachable; MLflow's errors as our one-line ones."""
    from mlflow.exceptions import MlflowException

    require_store(model_uri)
    attempts = retry.retries + 1
    started = time.monotonic()
    for attempt in range(1, attempts + 1):
        try:
            with http_policy(retry.timeout_s, 0, keep_user=True):  # our retries, not MLflow's
                return once()
        except ForecastError:
            raise
        except Exception as err:
            login = refused_login(err)
            if login is not None:  # retrying cannot help
                raise auth_error(server_name(mlflow.get_tracking_uri()), login) from err
            reason = connection_problem(err, retry.timeout_s)
            if reason is None:
                if isinstance(err, MlflowException) and err.error_code in _NOT_FOUND:
                    store = server_name(mlflow.get_tracking_uri())
                    raise ModelNotFoundError(
                        f"model not found: {model_uri} ({one_line(err)}) in the MLflow store {store}"
                    ) from err
                raise
            server = server_name(mlflow.get_tracking_uri())
            if attempt == attempts:
                raise TrackingUnavailableError(
                    f"cannot reach the MLflow tracking server at {server} to load {model_uri}: "
                    f"{reason}, {attempts} attempt(s) over {time.monotonic() - started:.0f}s; check "
                    "that the server is up and MLFLOW_TRACKING_URI"
                ) from err
            delay = retry.backoff_s * 2 ** (attempt - 1)
            log.warning(
                "tracking server %s unreachable loading %s (%s; attempt %d of %d): retrying in %.1fs",
                server,
                model_uri,
                reason,
                attempt,
                attempts,
                delay,
            )
            time.sleep(delay)
    raise AssertionError("unreachable")  # the loop returns or raises


def load_registered(
    model_uri: str, runtime: Runtime = "torch", retry: LoadRetry | None = None
) -> tuple[Forecaster, ModelRef]:
    """Load a logged or registered model (`models:/NAME@alias`, `models:/NAME/3`, `runs:/...`)."""
    from forecast.forecaster import Forecaster

    folder, ref = resolve_model(model_uri, retry)
    return Forecaster.load(folder, runtime=runtime), ref
