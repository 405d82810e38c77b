"""Copy to a tracking server what a training could not log there (MLflow has no sync of its own).

    python -m forecast.tracking.sync mlflow-offline.db http://mlflow.example:5000
    python -m forecast.tracking.sync logs/train/runs/<time>/unpublished

The first form copies every run of an offline store (`logger.offline=true`) that was not copied
yet: params, full metric histories, tags, artifacts, the logged models, and the registered
versions with their aliases; each source run is then tagged `forecast.synced_run_id`, so a
second sync copies nothing twice. The second form finishes a run whose server was lost during
training: the held-back metrics and params, the model (logged, and registered when the training
was to register it), and the run's end. DEST defaults to MLFLOW_TRACKING_URI, or for a folder
to the server the training used. Exit codes are the pipelines' (docs/errors.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from forecast.errors import (
    ConfigError,
    ForecastError,
    InputFileError,
    NonFiniteError,
    TrackingUnavailableError,
)
from forecast.finite import require_finite
from forecast.tracking.http import check_server, is_outage, reason, server_name
from forecast.tracking.outage import HeldBack, send_held

if TYPE_CHECKING:
    import numpy as np
    from mlflow import MlflowClient
    from mlflow.entities import Run

log = logging.getLogger(__name__)

SYNCED_TAG = "forecast.synced_to"  # on a source run: the server it was copied to
SYNCED_RUN_TAG = "forecast.synced_run_id"  # on a source run: its copy's id there
SOURCE_RUN_TAG = "forecast.source_run_id"  # on a copy: the run it was copied from
UPLOADED_FILE = "uploaded.json"  # in an unpublished folder once it is uploaded


@dataclass
class SyncReport:
    """What a sync did, for the summary line."""

    copied: dict[str, str] = field(default_factory=dict)  # source run id -> destination run id
    skipped_running: list[str] = field(default_factory=list)
    registered: list[str] = field(default_factory=list)  # name/version@alias


def _store_uri(source: str) -> str:
    """A SQLite URI for `source` (a path to the .db file, or already a URI)."""
    if "://" in source:
        return source
    path = Path(source)
    if not path.is_file():
        raise InputFileError(
            f"no offline store (a .db file such as mlflow-offline.db) or unpublished folder at {source}"
        )
    return f"sqlite:///{path.resolve()}"


def _experiment_on(dst: MlflowClient, name: str) -> str:
    """The destination's experiment `name`, created (with the server's artifact store) if missing."""
    found = dst.get_experiment_by_name(name)
    if found is not None and found.lifecycle_stage == "active":
        return found.experiment_id
    if found is not None:
        dst.restore_experiment(found.experiment_id)
        return found.experiment_id
    return dst.create_experiment(name)


def _drop_partial_copies(dst: MlflowClient, experiment_id: str, run_id: str) -> None:
    """Delete copies of `run_id` left by a sync that stopped half-way (it tags its copy first)."""
    for run in dst.search_runs([experiment_id], filter_string=f"tags.`{SOURCE_RUN_TAG}` = '{run_id}'"):
        dst.delete_run(run.info.run_id)


def _copy_models(src: MlflowClient, dst: MlflowClient, run: Run, dest_run: str, experiment_id: str) -> dict:
    """Copy the logged models of `run` to `dest_run`; map of old model id to new model id."""
    import mlflow
    import yaml
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus

    mapping: dict[str, str] = {}
    found = src.search_logged_models(
        [run.info.experiment_id], filter_string=f"source_run_id = '{run.info.run_id}'"
    )
    for model in found:
        new = dst.create_logged_model(
            experiment_id,
            name=model.name,
            source_run_id=dest_run,
            tags=dict(model.tags or {}),
            params=dict(model.params or {}),
            model_type=model.model_type,
        )
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(
                mlflow.artifacts.download_artifacts(artifact_uri=model.artifact_location, dst_path=tmp)
            )
            mlmodel = local / "MLmodel"
            if mlmodel.is_file():  # it names the model and run it belongs to
                meta = yaml.safe_load(mlmodel.read_text())
                meta.update(model_id=new.model_id, run_id=dest_run)
                mlmodel.write_text(yaml.safe_dump(meta, sort_keys=False))
            dst.log_model_artifacts(new.model_id, str(local))
        dst.finalize_logged_model(new.model_id, LoggedModelStatus.READY)
        dst.log_outputs(dest_run, [LoggedModelOutput(model_id=new.model_id, step=0)])
        mapping[model.model_id] = new.model_id
    return mapping


def _copy_versions(
    src: MlflowClient, dst: MlflowClient, run: Run, dest_run: str, models: dict[str, str]
) -> list[str]:
    """Register on the destination what the source run registered, with the same aliases."""
    done = []
    for version in src.search_model_versions(f"run_id = '{run.info.run_id}'"):
        full = src.get_model_version(version.name, version.version)
        source, model_id = full.source.replace(run.info.run_id, dest_run), None
        for old_id, new_id in models.items():  # `models:/m-...`; model_id may be unset on the version
            if old_id in source or old_id == full.model_id:
                source, model_id = f"models:/{new_id}", new_id
        try:
            dst.get_registered_model(full.name)
        except Exception:
            dst.create_registered_model(full.name)
        tags = {k: v.replace(run.info.run_id, dest_run) for k, v in (full.tags or {}).items()}
        new = dst.create_model_version(full.name, source, run_id=dest_run, tags=tags, model_id=model_id)
        for alias in full.aliases or []:
            dst.set_registered_model_alias(full.name, alias, new.version)
        dst.set_tag(dest_run, "registered_version", f"{full.name}/{new.version}")
        done.append(f"{full.name}/{new.version}" + "".join(f"@{a}" for a in full.aliases or []))
    return done


def _copy_run(
    src: MlflowClient, dst: MlflowClient, run: Run, experiment_id: str, parents: dict
) -> tuple[str, list[str]]:
    """Copy one finished run (params, metric histories, tags, artifacts, models, versions).

    Returns the copy's id and the versions registered for it.
    """
    from mlflow.entities import Metric, Param, RunTag

    rid = run.info.run_id
    _drop_partial_copies(dst, experiment_id, rid)
    tags = {k: v for k, v in run.data.tags.items() if not k.startswith(("forecast.synced", SOURCE_RUN_TAG))}
    parent = tags.pop("mlflow.parentRunId", None)
    if parent and parent in parents:
        tags["mlflow.parentRunId"] = parents[parent]
    tags[SOURCE_RUN_TAG] = rid
    created = dst.create_run(
        experiment_id, start_time=run.info.start_time, tags=tags, run_name=run.info.run_name
    )
    new = created.info.run_id
    params = [Param(k, v) for k, v in run.data.params.items()]
    for i in range(0, len(params), 100):
        dst.log_batch(new, params=params[i : i + 100])
    history = [
        Metric(m.key, m.value, m.timestamp, m.step)
        for key in run.data.metrics
        for m in src.get_metric_history(rid, key)
    ]
    for i in range(0, len(history), 1000):
        dst.log_batch(new, metrics=history[i : i + 1000])
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(src.download_artifacts(rid, "", tmp))
        if any(local.iterdir()):
            dst.log_artifacts(new, str(local))
    models = _copy_models(src, dst, run, new, experiment_id)
    renamed = {}
    for key, value in tags.items():  # tags naming the old model or run (model_uri) follow the copy
        fixed = value.replace(rid, new)
        for old_id, new_id in models.items():
            fixed = fixed.replace(old_id, new_id)
        if fixed != value:
            renamed[key] = fixed
    if renamed:
        dst.log_batch(new, tags=[RunTag(k, v) for k, v in renamed.items()])
    versions = _copy_versions(src, dst, run, new, models)
    dst.set_terminated(new, run.info.status, end_time=run.info.end_time)
    return new, versions


def sync_store(source: str, dest: str) -> SyncReport:
    """Copy the runs of the offline store `source` that are not on `dest` yet."""
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    src_uri = _store_uri(source)
    check_server(dest)
    src, dst = MlflowClient(src_uri), MlflowClient(dest)
    report = SyncReport()
    parents: dict[str, str] = {}
    for experiment in src.search_experiments(view_type=ViewType.ACTIVE_ONLY):
        runs = src.search_runs(
            [experiment.experiment_id], order_by=["attributes.start_time ASC"], max_results=50000
        )
        for run in runs:
            parents.setdefault(run.info.run_id, run.data.tags.get(SYNCED_RUN_TAG, ""))
        todo = [r for r in runs if SYNCED_RUN_TAG not in r.data.tags]
        if not todo:
            continue
        experiment_id = _experiment_on(dst, experiment.name)
        for run in todo:
            if run.info.status == "RUNNING":
                report.skipped_running.append(run.info.run_id)
                continue
            new, versions = _copy_run(src, dst, run, experiment_id, {k: v for k, v in parents.items() if v})
            parents[run.info.run_id] = new
            src.set_tag(run.info.run_id, SYNCED_RUN_TAG, new)
            src.set_tag(run.info.run_id, SYNCED_TAG, server_name(dest))
            report.copied[run.info.run_id] = new
            report.registered += versions
    return report


def _load_unpublished(folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """run.json and metrics.json of a folder left by `keep_unpublished`."""
    try:
        info = json.loads((folder / "run.json").read_text())
        metrics = json.loads((folder / "metrics.json").read_text())
    except (OSError, ValueError) as err:
        raise InputFileError(
            f"{folder} is not a folder left by a training that lost its tracking server "
            f"(run.json, metrics.json): {err}"
        ) from err
    return info, metrics


def upload_unpublished(folder: Path, dest: str | None = None) -> SyncReport:
    """Finish on the server the run a lost server left unfinished: metrics, model, registration."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException
    from omegaconf import OmegaConf

    from forecast.forecaster import Forecaster
    from forecast.tracking import log_forecaster, register
    from forecast.tracking.pyfunc import serving_exports

    info, metrics = _load_unpublished(folder)
    report = SyncReport()
    if (folder / UPLOADED_FILE).exists():
        done = json.loads((folder / UPLOADED_FILE).read_text())
        log.info("%s was already uploaded to run %s", folder, done.get("run_id"))
        return report
    dest = dest or info["tracking_uri"]
    check_server(dest)
    mlflow.set_tracking_uri(dest)
    client = MlflowClient(dest)
    run_id = info["run_id"]
    params = dict(info["held_params"])
    try:
        existing = client.get_run(run_id).data.params
    except MlflowException as err:
        if err.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        name = info["params"].get("logger/experiment_name", "forecast")
        run_id = client.create_run(_experiment_on(client, name), tags=info["held_tags"]).info.run_id
        existing = {}
    params.update({k: v for k, v in info["params"].items() if k not in existing})
    held = HeldBack(metrics=list(metrics["held_back"]), params=params, tags=dict(info["held_tags"]))
    send_held(client, run_id, held)
    logged = set(client.get_run(run_id).data.metrics)
    extra = {k: v for k, v in metrics["final"].items() if k not in logged}
    if extra:
        client.log_batch(run_id, metrics=_metrics(extra))
    config_yaml = (folder / "config.yaml").read_text()
    cfg = OmegaConf.create(config_yaml)
    try:
        _check_finite(metrics["final"])
    except NonFiniteError as err:
        client.set_tag(run_id, "error", str(err)[:4000])
        client.set_terminated(run_id, "FAILED")
        raise
    import pandas as pd

    forecaster = Forecaster.load(folder / "model")
    forecaster.export = serving_exports(cfg.get("export", "auto"))
    with mlflow.start_run(run_id=run_id):
        mlflow.log_text(config_yaml, "config.yaml")
        example = pd.read_parquet(folder / "example.parquet")
        model = log_forecaster(forecaster, example, extra_files={"config.yaml": config_yaml})
        mlflow.set_tag("model_uri", model.model_uri)
        if info.get("register"):
            name, alias = info["register"]["name"], info["register"].get("alias")
            version = register(model.model_uri, name, alias, tags={"run_id": run_id})
            mlflow.set_tag("registered_version", f"{name}/{version.version}")
            report.registered.append(f"{name}/{version.version}" + (f"@{alias}" if alias else ""))
    report.copied[info["run_id"]] = run_id
    (folder / UPLOADED_FILE).write_text(json.dumps({"run_id": run_id, "tracking_uri": server_name(dest)}))
    return report


def _check_finite(final: dict[str, float]) -> None:
    """The training's rule: a model whose test (else validation) scores are not finite is not published."""
    split = "test/" if any(k.startswith("test/") for k in final) else "val/"
    names = [k for k in final if k.startswith(split)]

    def message(bad: np.ndarray) -> str:
        listed = sorted(k for k, is_bad in zip(names, bad, strict=True) if is_bad)
        return (
            f"the kept model's scores are not finite ({', '.join(listed[:6])}): the run is marked FAILED "
            "and the model is neither logged nor registered"
        )

    require_finite([final[k] for k in names], message)


def _metrics(values: dict[str, float]) -> list:
    """MLflow metrics (step 0, now) for a dict of final scores."""
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    return [Metric(k, float(v), now, 0) for k, v in values.items()]


def main(argv: list[str] | None = None) -> int:
    """Command line: the source decides what is copied; exits with the pipelines' codes."""
    parser = argparse.ArgumentParser(
        prog="python -m forecast.tracking.sync", description=__doc__.split("\n")[0]
    )
    parser.add_argument("source", help="an offline store (mlflow-offline.db) or an `unpublished` folder")
    parser.add_argument("dest", nargs="?", help="tracking server URI (default: MLFLOW_TRACKING_URI)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from forecast.cli import debug_requested, one_line

    folder = Path(args.source).is_dir()
    dest = args.dest or os.environ.get("MLFLOW_TRACKING_URI")
    try:
        if folder:
            report = upload_unpublished(Path(args.source), args.dest)
        else:
            if not dest or dest == _store_uri(args.source):
                raise ConfigError("give the tracking server to copy to: sync SOURCE DEST_URI")
            report = sync_store(args.source, dest)
    except Exception as err:
        error = err if isinstance(err, ForecastError) else None
        if error is None and is_outage(err):  # lost during the sync: a rerun picks up from there
            error = TrackingUnavailableError(
                f"the tracking server failed during the sync ({reason(err)}): run the same command again "
                "when it is back; nothing is copied twice"
            )
        if error is None or debug_requested():
            raise
        print(f"error: {one_line(error)}", file=sys.stderr)
        return error.exit_code
    if folder and not report.copied:
        print(f"{args.source} was uploaded already ({UPLOADED_FILE}); nothing to do")
        return 0
    verb = "uploaded" if folder else "copied"
    parts = [f"{verb} {len(report.copied)} run(s)"]
    parts += [f"registered {', '.join(report.registered)}"] if report.registered else []
    if report.skipped_running:
        parts.append(f"skipped {len(report.skipped_running)} still RUNNING (sync again once they end)")
    print("; ".join(parts) + "".join(f"\n  {a} -> {b}" for a, b in report.copied.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
