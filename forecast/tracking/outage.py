"""Training against a tracking server that is down, or goes away: fail fast, or keep going locally.

MLflow retries a request 7 times over about 4 minutes, each waiting up to 120 s for an answer,
so a dead server used to cost 257 s before training failed and a server lost mid-run stalled
every metric logged. Here a server is probed with a short policy at start
(`check_server`), and `ResilientMLFlowLogger` holds back what it cannot log during training
(metrics, params, the run's end) instead of stalling: training finishes, and `keep_unpublished`
saves the model and the held-back metrics beside the run's outputs for
`python -m forecast.tracking.sync` to upload later (docs/tracking.md).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lightning.pytorch.loggers import MLFlowLogger

from forecast.errors import TrackingUnavailableError
from forecast.tracking.http import (
    OFFLINE_HINT,
    RETRIES_ENV,
    TIMEOUT_ENV,
    auth_error,
    health_problem,
    http_policy,
    http_status,
    is_outage,
    is_remote,
    reason,
    server_name,
)

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient

    from forecast.forecaster import Forecaster

log = logging.getLogger(__name__)

RECONNECT_EVERY_S = 30.0  # while the server is lost, how often a log call checks whether it is back
UNPUBLISHED_DIR = "unpublished"
SYNC_COMMAND = "python -m forecast.tracking.sync"


_GUARDED = frozenset({"log_batch", "log_metric", "log_param", "set_tag", "set_terminated", "get_run"})
_GUARDED |= {"log_artifact", "log_artifacts"}


class _GuardedClient:
    """An MlflowClient whose logging calls go through the logger's guard once the run exists."""

    def __init__(self, client: MlflowClient, logger: ResilientMLFlowLogger):
        self._client = client
        self._logger = logger

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if name not in _GUARDED or not self._logger._initialized:
            return attr
        return lambda *args, **kwargs: self._logger._guard(name, attr, args, kwargs)


@dataclass
class HeldBack:
    """What could not be logged while the server was away, to be uploaded later."""

    metrics: list[dict[str, Any]]
    params: dict[str, str]
    tags: dict[str, str]
    status: str | None = None  # the run's end (FINISHED), when set_terminated failed


class ResilientMLFlowLogger(MLFlowLogger):
    """Lightning's MLFlowLogger that never stalls or stops training on a tracking-server outage.

    Creating the run fails at once with a TrackingUnavailableError. After that, a request that
    fails (connection refused, no answer in `request_timeout` s after `request_retries` retries,
    HTTP 5xx/401/403) is held back: metrics, params and tags are kept in `held`, training goes
    on, and every `RECONNECT_EVERY_S` a log call checks whether the server is back and sends
    what was held. `lost` says whether anything is still held at the end. A local store is
    used exactly as MLFlowLogger does.
    """

    def __init__(self, *args: Any, request_timeout: float = 30, request_retries: int = 1, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.remote = is_remote(self._tracking_uri)
        self.request_timeout = request_timeout
        self.request_retries = request_retries
        self.held = HeldBack(metrics=[], params={}, tags={})
        self.sent_params: dict[str, str] = {}  # a second log_hyperparams (at test) re-sends them
        self.failure: str | None = None  # the first failure's reason while lost
        self.failed_step: int | None = None
        self._retry_at = 0.0
        self._saved_env: dict[str, str | None] = {}
        if self.remote:
            self._mlflow_client = _GuardedClient(self._mlflow_client, self)  # type: ignore[assignment]

    @property
    def tracking_uri(self) -> str:
        """Where the run lives."""
        return self._tracking_uri

    @property
    def lost(self) -> bool:
        """Whether something could not be logged and is still held back."""
        return self.failure is not None

    @property
    def experiment(self) -> MlflowClient:
        """The client; creating (or reopening) the run fails fast with a TrackingUnavailableError."""
        getter = MLFlowLogger.experiment.fget
        if self._initialized or not self.remote:
            return getter(self)
        try:
            with http_policy(self.request_timeout, self.request_retries):
                return getter(self)
        except Exception as err:
            status = http_status(err)
            if status in (401, 403):
                raise auth_error(self._tracking_uri, status) from err
            if not is_outage(err):
                raise
            raise TrackingUnavailableError(
                f"MLflow tracking server {server_name(self._tracking_uri)} failed while creating the "
                f"run ({reason(err)}): start it or fix MLFLOW_TRACKING_URI, or {OFFLINE_HINT}"
            ) from err

    def _guard(self, name: str, call: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
        """Make one logging request with the short policy; hold it back if the server is away."""
        if self.failure is not None and not self._reconnect():
            self._hold(name, args, kwargs)
            return None
        try:
            with http_policy(self.request_timeout, self.request_retries):
                result = call(*args, **kwargs)
        except Exception as err:
            if not is_outage(err):
                raise
            self._fail(err, name, args, kwargs)
            return None
        if name == "log_batch":
            self.sent_params.update({p.key: p.value for p in kwargs.get("params") or ()})
        return result

    def _fail(self, err: BaseException, name: str, args: tuple, kwargs: dict) -> None:
        """Record the first failure, hold the call back, make the rest of the process fail fast."""
        if self.failure is None:
            self.failure = reason(err)
            log.warning(
                "MLflow tracking server %s failed (%s): training goes on; metrics are held back and "
                "sent when it is back (checked every %.0f s), else kept locally at the end",
                server_name(self._tracking_uri),
                self.failure,
                RECONNECT_EVERY_S,
            )
            # Any other request of this process (marking the run FAILED...) gives up at once too.
            fast = {RETRIES_ENV: "0", TIMEOUT_ENV: str(max(1, round(self.request_timeout)))}
            self._saved_env = {name: os.environ.get(name) for name in fast}
            os.environ.update(fast)
        self._retry_at = time.monotonic() + RECONNECT_EVERY_S
        self._hold(name, args, kwargs)

    def _hold(self, name: str, args: tuple, kwargs: dict) -> None:
        """Keep what a failed call would have logged."""
        if name == "log_batch":
            metrics = kwargs.get("metrics", args[1] if len(args) > 1 else ())
            params = kwargs.get("params", args[2] if len(args) > 2 else ())
            tags = kwargs.get("tags", args[3] if len(args) > 3 else ())
            for m in metrics or ():
                self._hold_metric(m.key, m.value, m.step, m.timestamp)
            sent = self.sent_params
            self.held.params.update({p.key: p.value for p in params or () if sent.get(p.key) != p.value})
            self.held.tags.update({t.key: t.value for t in tags or ()})
        elif name == "set_terminated":
            self.held.status = kwargs.get("status", args[1] if len(args) > 1 else None) or "FINISHED"
        elif name == "set_tag":
            self.held.tags[str(args[1])] = str(args[2])
        elif name == "log_param":
            self.held.params[str(args[1])] = str(args[2])
        elif name == "log_metric":
            step = kwargs.get("step", args[4] if len(args) > 4 else 0) or 0
            self._hold_metric(args[1], args[2], step, int(time.time() * 1000))
        # get_run (a read) and artifact uploads (checkpoints, only with log_model) keep nothing.

    def _hold_metric(self, key: str, value: float, step: int, timestamp: int) -> None:
        """Keep one metric value, and the step of the first one held."""
        self.held.metrics.append({"key": key, "value": value, "step": step, "timestamp": timestamp})
        if self.failed_step is None:
            self.failed_step = step

    def settle(self) -> bool:
        """At the end of training, one last try to send what was held; whether anything still is."""
        if self.failure is not None and self._initialized:
            self._reconnect(force=True)
        return self.lost

    def _reconnect(self, force: bool = False) -> bool:
        """When due, check the server (one quick request) and send what was held; True when back."""
        if not force and time.monotonic() < self._retry_at:
            return False
        self._retry_at = time.monotonic() + RECONNECT_EVERY_S
        quick = (2.0, min(self.request_timeout, 5.0))  # while training: a busy check costs little
        if health_problem(self._tracking_uri, None if force else quick) is not None:
            return False
        try:
            with http_policy(self.request_timeout, self.request_retries):
                send_held(self._mlflow_client._client, self._run_id, self.held)
        except Exception as err:
            if not is_outage(err):
                raise
            return False
        log.warning("MLflow tracking server %s is back: sent what was held", server_name(self._tracking_uri))
        self.held = HeldBack(metrics=[], params={}, tags={})
        self.failure, self.failed_step = None, None
        for name, value in self._saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        return True


def send_held(client: MlflowClient, run_id: str, held: HeldBack) -> None:
    """Log held-back params, tags and metrics to `run_id` (params already there are skipped)."""
    from mlflow.entities import Metric, Param, RunTag

    existing = client.get_run(run_id).data.params
    params = [Param(k, v) for k, v in held.params.items() if k not in existing]
    for i in range(0, len(params), 100):
        client.log_batch(run_id, params=params[i : i + 100])
    if held.tags:
        client.log_batch(run_id, tags=[RunTag(k, v) for k, v in held.tags.items()])
    metrics = [Metric(m["key"], m["value"], m["timestamp"], m["step"]) for m in held.metrics]
    for i in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[i : i + 1000])
    if held.status:
        client.set_terminated(run_id, held.status)


@dataclass
class Unpublished:
    """What `keep_unpublished` writes as run.json: enough for `sync` to finish the run later."""

    tracking_uri: str
    run_id: str
    experiment_id: str | None
    failure: str
    failed_step: int | None
    params: dict[str, str]
    held_params: dict[str, str]
    held_tags: dict[str, str]
    register: dict[str, str] | None  # {"name": ..., "alias": ...} when the training registers


def keep_unpublished(
    folder: Path,
    logger: ResilientMLFlowLogger,
    forecaster: Forecaster,
    example: pd.DataFrame,
    config_yaml: str,
    params: dict[str, str],
    metrics: dict[str, float],
    register: dict[str, str] | None,
) -> TrackingUnavailableError:
    """Save the model and what was not logged under `folder`; the error that says so and how to upload."""
    folder.mkdir(parents=True, exist_ok=True)
    forecaster.save(folder / "model")
    example.to_parquet(folder / "example.parquet")
    (folder / "config.yaml").write_text(config_yaml)
    held = logger.held
    (folder / "metrics.json").write_text(json.dumps({"final": metrics, "held_back": held.metrics}, indent=1))
    record = Unpublished(
        tracking_uri=server_name(logger.tracking_uri),
        run_id=str(logger._run_id),
        experiment_id=logger._experiment_id,
        failure=logger.failure or "",
        failed_step=logger.failed_step,
        params=params,
        held_params=held.params,
        held_tags=held.tags,
        register=register,
    )
    (folder / "run.json").write_text(json.dumps(asdict(record), indent=1))
    missing = [f"{len(held.metrics)} metric values from step {logger.failed_step}"] if held.metrics else []
    if held.params:
        missing.append(f"{len(held.params)} params")
    missing.append("the model")
    if register:
        missing.append(f"its registration as {register['name']}@{register.get('alias') or 'a new version'}")
    return TrackingUnavailableError(
        f"MLflow tracking server {record.tracking_uri} was lost during training ({record.failure}); "
        f"run {record.run_id} lacks {', '.join(missing)}. Kept locally in {folder} (model/, "
        f"metrics.json); upload them when the server is back: {SYNC_COMMAND} {folder}"
    )
