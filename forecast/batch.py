"""Batch forecast: registered model + history table in, forecast table out, written atomically.

Two engines run the same per-chunk code (`forecast.engines.chunks`): `local` streams the input
through this process into one Parquet file; `ray` spreads partitions of series over a Ray
cluster and writes a folder of Parquet files.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, TypeVar

import mlflow
from mlflow import MlflowClient
from mlflow.models import Model

from forecast.asof import AsOf
from forecast.cli import one_line
from forecast.data.io import check_input
from forecast.data.staging import prepare_output
from forecast.engines.local import ProgressMode, forecast_file
from forecast.errors import (
    ConfigError,
    ForecastError,
    ModelNotFoundError,
    TrackingUnavailableError,
)
from forecast.forecaster import Forecaster, Runtime
from forecast.tracking import pyfunc as pyfunc_loader
from forecast.tracking.store import require_store, use_store

log = logging.getLogger(__name__)

_REGISTRY_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")

Engine = Literal["local", "ray"]
T = TypeVar("T")


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


@dataclass
class RayOptions:
    """Where and how wide the Ray engine runs (see conf/batch_forecast.yaml)."""

    address: str | None = None  # None: start a local Ray; "auto": join the running cluster
    num_cpus: int | None = None  # for a local Ray only
    workers: int | None = None  # model replicas; default: one per CPU of the cluster
    cpus_per_worker: float = 1.0
    rows_per_partition: int = 1_000_000
    init_kwargs: dict = field(default_factory=dict)


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


def _chain(err: BaseException) -> list[BaseException]:
    """`err` and the exceptions behind it (MLflow re-raises connection errors without `from`)."""
    seen: list[BaseException] = []
    current: BaseException | None = err
    while current is not None and all(current is not e for e in seen):
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _unreachable(err: BaseException, timeout_s: int) -> str | None:
    """Why the tracking server could not be reached, or None if it answered."""
    import socket

    from requests import exceptions as http

    chain = _chain(err)
    if any(isinstance(e, ConnectionRefusedError) for e in chain):
        return "connection refused"
    if any(isinstance(e, http.Timeout | TimeoutError | socket.timeout) for e in chain):
        return f"no answer within {timeout_s}s"
    if any(isinstance(e, socket.gaierror) for e in chain):
        return "unknown host"
    if any(isinstance(e, http.RetryError) for e in chain):
        return "the server answered with an error status (e.g. 503)"
    if any(isinstance(e, http.ConnectionError | ConnectionError) for e in chain):
        return "connection failed"
    return None


def _refused_login(err: BaseException) -> int | None:
    """401 or 403 when the tracking server turned the credentials down, else None."""
    from mlflow.exceptions import MlflowException

    for e in _chain(err):
        if not isinstance(e, MlflowException):
            continue
        match = re.search(r"error code (\d{3}) != 200", str(e))  # a non-JSON answer (basic-auth app)
        status = int(match.group(1)) if match else None
        if status in (401, 403):
            return status
        if e.error_code in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
            return 401 if e.error_code == "UNAUTHENTICATED" else 403
    return None


@contextmanager
def _http_limits(retry: LoadRetry) -> Iterator[None]:
    """Turn MLflow's own HTTP retries off and cap each request's wait, unless the user set them."""
    limits = {
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(retry.timeout_s),
    }
    saved = {name: os.environ.get(name) for name in limits}
    for name, value in limits.items():
        if saved[name] is None:
            os.environ[name] = value
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)


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
            with _http_limits(retry):
                return once()
        except ForecastError:
            raise
        except Exception as err:
            # Only on failure: forecast.tracking.outage imports Lightning, which the batch path avoids.
            from forecast.tracking.outage import auth_error, server_name

            login = _refused_login(err)
            if login is not None:  # retrying cannot help
                raise auth_error(server_name(mlflow.get_tracking_uri()), login) from err
            reason = _unreachable(err, retry.timeout_s)
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
    folder, ref = resolve_model(model_uri, retry)
    return Forecaster.load(folder, runtime=runtime), ref


@dataclass(frozen=True)
class BatchResult:
    """What a batch forecast wrote, from what, and how much."""

    output: Path
    model: ModelRef
    series: int
    rows: int  # input rows forecast from (after the `as_of` cut)
    dropped: int  # input rows after `as_of`
    seconds: float


def run_batch_forecast(
    model_uri: str,
    input_path: str,
    output_path: str,
    root_dir: str = ".",
    batch_size: int = 4096,
    *,
    engine: Engine = "local",
    runtime: Runtime = "auto",
    chunk_rows: int = 1_000_000,
    progress: ProgressMode = "auto",
    ray: RayOptions | None = None,
    retry: LoadRetry | None = None,
    as_of: AsOf | None = None,
    future: str | None = None,
) -> Path:
    """Forecast every series in `input_path` with the model at `model_uri`, write `output_path`.

    `local` writes one Parquet file; `ray` a folder of Parquet files. Either appears complete
    or not at all, and an earlier output stays intact when the run fails. The output path is
    checked (and leftovers of killed runs beside it removed) before the model is loaded;
    `retry` says how model loading rides out a tracking server outage; `as_of` cuts the
    history at that date (`forecast.asof`). `future`: for a model with future-known covariates,
    a table of their values over the horizon (id, time, columns), instead of future rows in the
    input (docs/batch.md, Covariates). Scheduled runs go through `forecast.schedule`.
    """
    return forecast_batch(
        model_uri,
        input_path,
        output_path,
        root_dir,
        batch_size,
        engine=engine,
        runtime=runtime,
        chunk_rows=chunk_rows,
        progress=progress,
        ray=ray,
        retry=retry,
        as_of=as_of,
        future=future,
    ).output


def forecast_batch(
    model_uri: str,
    input_path: str,
    output_path: str,
    root_dir: str = ".",
    batch_size: int = 4096,
    *,
    engine: Engine = "local",
    runtime: Runtime = "auto",
    chunk_rows: int = 1_000_000,
    progress: ProgressMode = "auto",
    ray: RayOptions | None = None,
    retry: LoadRetry | None = None,
    as_of: AsOf | None = None,
    metadata: dict[str, str] | None = None,
    future: str | None = None,
) -> BatchResult:
    """`run_batch_forecast`, returning what was done; `metadata` is added to the output's."""
    if engine not in ("local", "ray"):
        raise ConfigError(f"unknown engine {engine!r}; use local or ray")
    as_of = as_of or AsOf(None)
    use_store(root_dir)
    started = time.perf_counter()
    prepare_output(output_path, folder=engine == "ray")
    extra = {**as_of.metadata(), **(metadata or {})}
    if future is not None:
        check_input(future)  # a missing future table fails before the model is loaded
        extra["forecast.future"] = os.path.abspath(future)
    if engine == "ray":
        from forecast.engines.ray import forecast_on_ray

        summary, ref = forecast_on_ray(
            model_uri,
            input_path,
            output_path,
            options=ray or RayOptions(),
            batch_size=batch_size,
            runtime=runtime,
            retry=retry,
            as_of=as_of,
            metadata=extra,
            future=future,
        )
        return BatchResult(
            summary.output, ref, summary.series, summary.rows, summary.dropped, time.perf_counter() - started
        )
    forecaster, ref = load_registered(model_uri, runtime=runtime, retry=retry)
    as_of.check(forecaster.settings.freq, forecaster.columns.time_col)
    summary = forecast_file(
        forecaster,
        input_path,
        output_path,
        {**ref.metadata(), **extra},
        chunk_rows=chunk_rows,
        batch_size=batch_size,
        progress=progress,
        as_of=as_of,
        future=future,
    )
    log.info(
        "forecast %d series x %d steps with %s (version %s, run %s; %s) in %.1fs -> %s",
        summary.series,
        forecaster.settings.horizon,
        ref.name or model_uri,
        ref.version or "-",
        ref.run_id,
        forecaster.runtime,
        time.perf_counter() - started,
        summary.output,
    )
    return BatchResult(
        summary.output, ref, summary.series, summary.rows, summary.dropped, time.perf_counter() - started
    )
