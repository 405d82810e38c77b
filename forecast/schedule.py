"""Scheduled batch forecasts: one output and one MLflow run per (model version, as_of, output).

A scheduler (cron, Airflow) runs the batch forecast once a day with `as_of` (default: today in
UTC) and retries it when it fails, so a run must be safe to repeat (docs/batch.md, Scheduling):

- `output` may hold `{as_of}`, replaced by the date: `forecasts/as_of={as_of}/forecast.parquet`
  is a Hive-style partition per day. An output without it is written where it says.
- **Already done**: when the output exists and its file metadata says the same `as_of`, the
  same model version (or, for a `runs:/` or path URI, the same URI) and the same input path,
  the run logs `already done: ...` and ends with exit code 0, touching nothing. `overwrite=true`
  forecasts again and replaces the output atomically. The input's contents are not compared: a
  corrected history of a past day needs `overwrite=true`. `as_of=null` cuts nothing, so the
  output is always redone.
- **One MLflow run** in the experiment `forecast-batch` per (model version, as_of, output),
  found again by its `batch_key` tag: a retry after a failure or an `overwrite=true` reuses it
  (when its params are the same; one with other params, e.g. another input, is deleted and
  replaced). It holds the params model_uri, model_version, input, output and engine, the tags
  as_of, as_of_strict and model_version, and the metrics series, rows, rows_dropped and seconds; it ends
  FINISHED, or FAILED (KILLED on Ctrl-C or SIGTERM) with the error in its `error` tag.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag, ViewType

from forecast.asof import AsOf
from forecast.batch import BatchResult, forecast_batch
from forecast.cli import one_line
from forecast.data.staging import output_lock, prepare_output
from forecast.engines.request import BatchRequest
from forecast.errors import ConfigError
from forecast.tracking.resolve import ModelRef, pin_model
from forecast.tracking.store import ensure_experiment, use_store

log = logging.getLogger(__name__)

EXPERIMENT = "forecast-batch"
PLACEHOLDER = "{as_of}"


def output_path(template: str, as_of: AsOf) -> Path:
    """`template` with `{as_of}` replaced by the date (a ConfigError when as_of=null)."""
    if PLACEHOLDER not in template:
        return Path(template)
    if as_of.value is None:
        raise ConfigError(f"output={template!r} holds {PLACEHOLDER}, but as_of=null: give a date or step")
    return Path(template.replace(PLACEHOLDER, as_of.label))


def identity(ref: ModelRef) -> str:
    """The model as "already done" compares it: name and version, else the URI."""
    return f"{ref.name} version {ref.version}" if ref.version else ref.uri


def written_metadata(path: Path) -> dict[str, str] | None:
    """The `forecast.*` metadata of an output (a file, or a folder's first file); None if unreadable."""
    try:
        files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
        if not files:
            return None
        meta = pq.read_schema(files[0]).metadata or {}
    except (OSError, ValueError) as err:  # unreadable or not Parquet: forecast again
        log.info("cannot read the metadata of %s (%s): forecasting again", path, one_line(err))
        return None
    return {k.decode(): v.decode() for k, v in meta.items() if k.startswith(b"forecast.")}


def already_done(path: Path, as_of: AsOf, ref: ModelRef, input_path: str) -> bool:
    """Whether `path` holds this as_of's forecast from this model version and input (never for null)."""
    if as_of.value is None or not path.exists():
        return False
    meta = written_metadata(path)
    if meta is None or meta.get("forecast.as_of") != as_of.label:
        return False
    if meta.get("forecast.input") != os.path.abspath(input_path):
        return False
    if ref.version:
        return meta.get("forecast.name") == ref.name and meta.get("forecast.version") == ref.version
    return meta.get("forecast.uri") == ref.uri


@dataclass(frozen=True)
class BatchRun:
    """The MLflow run of one scheduled forecast."""

    run_id: str
    reused: bool


def batch_key(ref: ModelRef, as_of: AsOf, output: Path) -> str:
    """What identifies a scheduled forecast's run: model version, as_of and output, hashed."""
    text = f"{identity(ref)}|{as_of.label}|{output}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def open_run(
    experiment_id: str, key: str | None, params: dict[str, str], tags: dict[str, str], name: str
) -> BatchRun:
    """The run of `key`, reopened when its params match, else a new one (always new for as_of=null)."""
    client = MlflowClient()
    found = []
    if key is not None:
        found = client.search_runs(
            [experiment_id],
            filter_string=f"tags.batch_key = '{key}'",
            run_view_type=ViewType.ACTIVE_ONLY,
            order_by=["attributes.start_time DESC"],
        )
    keep = next((r for r in found if r.data.params == params), None)
    for run in found:
        if run is not keep:  # one run per forecast: an earlier one with other params goes
            log.info("replacing MLflow run %s (params %s)", run.info.run_id, run.data.params)
            client.delete_run(run.info.run_id)
    if keep is not None:
        run_id = keep.info.run_id
        client.update_run(run_id, status="RUNNING")
        for stale in ("error", "error.type"):
            if stale in keep.data.tags:
                client.delete_tag(run_id, stale)
        client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        return BatchRun(run_id, reused=True)
    run = client.create_run(
        experiment_id, tags={**tags, **({"batch_key": key} if key else {})}, run_name=name
    )
    client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in params.items()])
    return BatchRun(run.info.run_id, reused=False)


def close_run(run_id: str, result: BatchResult) -> None:
    """Log the metrics and mark the run FINISHED; the output is written, so a failure here only warns."""
    client = MlflowClient()
    try:
        metrics = {
            "series": result.series,
            "rows": result.rows,
            "rows_dropped": result.dropped,
            "seconds": result.seconds,
        }
        stamp = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric(k, float(v), stamp, 0) for k, v in metrics.items()])
        client.set_terminated(run_id, "FINISHED")
    except Exception as err:  # the output is complete; the next run sees it as done
        log.warning("forecast written, but MLflow run %s could not be closed: %s", run_id, one_line(err))


def fail_run(run_id: str, err: BaseException) -> None:
    """Mark the run FAILED (KILLED on Ctrl-C or SIGTERM) with the error as tags."""
    killed = isinstance(err, KeyboardInterrupt) or type(err).__name__ in ("Terminated", "SIGTERMException")
    status = "KILLED" if killed else "FAILED"
    try:
        client = MlflowClient()
        client.set_tag(run_id, "error", one_line(err)[:4000])
        client.set_tag(run_id, "error.type", type(err).__name__)
        client.set_terminated(run_id, status)
    except Exception as tracking_err:  # the store itself may be what failed
        log.warning("could not mark MLflow run %s %s: %s", run_id, status, one_line(tracking_err))


def run_scheduled_forecast(
    model_uri: str,
    input_path: str,
    output: str,
    root_dir: str = ".",
    *,
    as_of: object = "today",
    as_of_strict: bool = False,
    overwrite: bool = False,
    experiment: str = EXPERIMENT,
    **options: Any,
) -> BatchResult | None:
    """The batch forecast as of a date, safe to repeat; None when it was already done.

    `output` may hold `{as_of}`; `as_of_strict`: an observed target after `as_of` fails the run
    (LateRowsError, exit 4, nothing written) instead of being cut with a WARNING
    (`forecast.asof`); `options`: the other fields of `BatchRequest` (engine, runtime, future, ...).
    """
    cut = AsOf.parse(as_of, strict=as_of_strict)
    request = BatchRequest(model_uri, input_path, output, root_dir, as_of=cut, **options)
    return run_scheduled(request, overwrite=overwrite, experiment=experiment)


def run_scheduled(
    request: BatchRequest, *, overwrite: bool = False, experiment: str = EXPERIMENT
) -> BatchResult | None:
    """`run_scheduled_forecast` for a whole request (the Hydra app builds one from its config)."""
    if not isinstance(overwrite, bool):
        raise ConfigError(f"overwrite must be true or false, got {overwrite!r}")
    cut, model_uri, input_path = request.as_of, request.model_uri, request.input_path
    assert cut is not None  # BatchRequest fills in the defaults
    target = output_path(request.output_path, cut)
    use_store(request.root_dir)
    prepare_output(target, folder=request.engine == "ray")  # before the registry is asked: exit 7 at once
    ref = pin_model(model_uri, request.retry)
    # One run at a time per output (and so per as_of): a twin started together waits, then finds
    # it done. overwrite=true asks for the work whatever was done: no lock, the last rename wins.
    with output_lock(target) if not overwrite else nullcontext():
        if not overwrite and already_done(target, cut, ref, input_path):
            log.info(
                "already done: %s (as_of=%s, %s); overwrite=true to redo",
                target,
                cut.label,
                f"model version {ref.version}" if ref.version else f"model {ref.uri}",
            )
            return None
        absolute = Path(os.path.abspath(target))
        params = {
            "model_uri": model_uri,
            "model_version": ref.version or "-",
            "input": os.path.abspath(input_path),
            "output": str(absolute),
            "engine": request.engine,
        }
        if request.future is not None:  # only then: runs of forecasts without one keep their params
            params["future"] = os.path.abspath(request.future)
        tags = {"as_of": cut.label, "model_version": ref.version or "-", "model_name": ref.name or "-"}
        tags["as_of_strict"] = str(cut.strict).lower()
        name = f"{ref.name or 'batch'} v{ref.version or '-'} as_of={cut.label}"
        experiment_id = ensure_experiment(experiment, request.root_dir)
        key = batch_key(ref, cut, absolute) if cut.value is not None else None
        run = open_run(experiment_id, key, params, tags, name)
        log.info("MLflow run %s (%s) for as_of=%s", run.run_id, "reused" if run.reused else "new", cut.label)
        try:
            result = forecast_batch(
                replace(
                    request,
                    model_uri=ref.pinned_uri,  # the version pinned above, whatever the alias says by now
                    output_path=str(target),
                    metadata={"forecast.uri": model_uri, "forecast.input": params["input"]},
                )
            )
        except BaseException as err:
            fail_run(run.run_id, err)
            raise
        close_run(run.run_id, result)
        log.info("forecast as_of=%s written to %s (MLflow run %s)", cut.label, result.output, run.run_id)
        return result
