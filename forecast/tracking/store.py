"""Where MLflow runs and models live: a local SQLite store unless MLFLOW_TRACKING_URI says otherwise.

`logger.offline=true` sends a training to `<root>/mlflow-offline.db` (artifacts in
`<root>/mlartifacts-offline/`) whatever MLFLOW_TRACKING_URI says; `python -m
forecast.tracking.sync` copies it to a server later (docs/tracking.md).
"""

from __future__ import annotations

import atexit
import logging
import os
from pathlib import Path

import mlflow

log = logging.getLogger(__name__)

OFFLINE_DB = "mlflow-offline.db"
OFFLINE_ARTIFACTS = "mlartifacts-offline"
OFFLINE_TAG = "forecast.offline_for"  # on runs logged offline: the server they were meant for


def tracking_uri(root_dir: str | Path) -> str:
    """MLFLOW_TRACKING_URI when set (a tracking server), else `sqlite:///<root>/mlflow.db`."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{Path(root_dir).resolve() / 'mlflow.db'}"


def artifact_location(uri: str, root_dir: str | Path) -> str | None:
    """Local artifact folder for a local store; None lets a tracking server choose its own."""
    if uri.startswith(("sqlite:", "file:")) or "://" not in uri:
        folder = OFFLINE_ARTIFACTS if uri == offline_uri(root_dir) else "mlartifacts"
        return (Path(root_dir).resolve() / folder).as_uri()
    return None


def offline_uri(root_dir: str | Path) -> str:
    """The offline store: a SQLite file of its own, so that syncing it copies only offline runs."""
    return f"sqlite:///{Path(root_dir).resolve() / OFFLINE_DB}"


def go_offline(root_dir: str | Path) -> str:
    """Send this process's tracking (and its subprocesses') to the offline store; return its URI."""
    uri = offline_uri(root_dir)
    os.environ["MLFLOW_TRACKING_URI"] = uri  # publish, register and DDP workers follow
    mlflow.set_tracking_uri(uri)
    return uri


def use_store(root_dir: str | Path) -> str:
    """Point this process's MLflow client at the project's store and return its URI."""
    uri = tracking_uri(root_dir)
    mlflow.set_tracking_uri(uri)
    return uri


def require_store(model_uri: str) -> None:
    """A model named by the registry or a run lives in a store: refuse a local one that does not
    exist, before MLflow creates it empty and answers "not found" (a job run from another folder)."""
    uri = mlflow.get_tracking_uri()
    if not model_uri.startswith(("models:/", "runs:/")) or not uri.startswith("sqlite:///"):
        return
    path = Path(uri.removeprefix("sqlite:///"))
    if not path.exists():
        from forecast.errors import ModelNotFoundError

        raise ModelNotFoundError(
            f"model not found: {model_uri}: there is no MLflow store at {path}; run the job from the "
            "folder the model was trained in, or set MLFLOW_TRACKING_URI to its store"
        )


def ensure_experiment(name: str, root_dir: str | Path) -> str:
    """Experiment id for `name`, created with a local artifact folder when the store is local."""
    uri = use_store(root_dir)
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return mlflow.create_experiment(name, artifact_location=artifact_location(uri, root_dir))
    except mlflow.exceptions.MlflowException:
        # Another process created it meanwhile (two scheduled jobs starting on a fresh store).
        experiment = mlflow.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


def mlflow_logger(
    experiment_name: str,
    root_dir: str,
    run_name: str | None = None,
    run_id: str | None = None,
    tags: dict[str, str] | None = None,
    offline: bool = False,
    request_timeout: float = 30,
    request_retries: int = 1,
):
    """Lightning's MLFlowLogger on the project's store, checked first and tolerant of outages.

    A tracking server is probed at once (seconds, not MLflow's 4 minutes of retries) and then
    used through `ResilientMLFlowLogger`; `offline` logs to the offline store instead.
    """
    from forecast.tracking import http, outage

    uri = tracking_uri(root_dir)
    tags = dict(tags or {})
    if offline:
        server = uri if http.is_remote(uri) else None
        uri = go_offline(root_dir)
        tags[OFFLINE_TAG] = server or ""
        _sync_hint_at_exit(uri, server)
    elif http.is_remote(uri):
        http.check_server(uri, request_timeout, request_retries)
        http.apply_process_defaults()
    return outage.ResilientMLFlowLogger(
        experiment_name=experiment_name,
        run_name=run_name,
        tracking_uri=uri,
        artifact_location=artifact_location(uri, root_dir),
        run_id=run_id,
        tags=tags,
        request_timeout=request_timeout,
        request_retries=request_retries,
    )


_hinted: set[str] = set()


def _sync_hint_at_exit(uri: str, server: str | None) -> None:
    """Say, as the process ends, how to copy the offline runs to the server."""
    from forecast.tracking.http import server_name
    from forecast.tracking.outage import SYNC_COMMAND

    if uri in _hinted:
        return
    _hinted.add(uri)
    db = uri.removeprefix("sqlite:///")
    dest = server_name(server) if server else "<tracking server URI>"
    log.info("logging offline to %s", db)
    hint = f"Logged offline to {db}. Copy its runs to the tracking server when it is up: {SYNC_COMMAND} {db}"
    hint += f" {dest}"
    atexit.register(print, hint, flush=True)
