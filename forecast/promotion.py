"""Promotion gate: the `candidate` replaces the `champion` only if it backtests better on the same data.

Both versions are backtested (`forecast.backtest`) on the same table, cutoffs and season length;
the candidate wins if its metric (lower is better) beats the champion's by a relative `margin`,
or with `force`. The decision, both scores and the data (path and digest) go into one MLflow run
and onto both versions' tags.

Output columns: a candidate whose forecast would lack a column the champion's has (its quantiles,
its intervals; read from both versions' saved settings, `forecast.settings.saved_columns`) is
refused before any backtest, a ConfigError, unless `force`: downstream readers of the forecast
rely on the columns it writes (docs/batch.md, Output columns).

Concurrency: the `champion` alias is only ever moved with `set_registered_model_alias`, which
replaces it in one transaction, and never deleted, so a registry that had a champion always
has one. Just before moving it the gate reads it again: if another promotion moved it meanwhile,
the comparison is redone against the new champion (a decision is never made against a stale one).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from forecast.backtest import LOWER_IS_BETTER, BacktestResult, backtest_frame
from forecast.backtest_job import data_digest, log_result, model_season_length, resolve_season_length
from forecast.data.io import read_table
from forecast.errors import ConfigError, ModelNotFoundError, require_int
from forecast.forecaster import Forecaster, Runtime
from forecast.settings import saved_columns

log = logging.getLogger(__name__)

ROUNDS = 3  # comparisons redone when other promotions keep moving the champion meanwhile
TAG = "promotion."  # prefix of the tags the gate sets on model versions


@dataclass
class Decision:
    """What the gate did, and why: `promoted` is False when the champion was kept."""

    promoted: bool
    reason: str
    name: str
    metric: str
    candidate: str  # version
    champion: str | None  # the version compared against (None: there was no champion)
    scores: dict[str, float] = field(default_factory=dict)  # candidate, champion
    run_id: str = ""


def check_options(metric: str, margin: float, force: bool) -> tuple[str, float, bool]:
    """Bad gate settings are a ConfigError naming the option, before anything is loaded."""
    if metric not in LOWER_IS_BETTER:
        raise ConfigError(
            f"metric must be one of {', '.join(LOWER_IS_BETTER)} (lower is better), got {metric!r}"
        )
    if isinstance(margin, bool) or not isinstance(margin, int | float) or not 0.0 <= margin < 1.0:
        raise ConfigError(
            f"margin must be a relative improvement in [0, 1) (0.05 = 5% better), got {margin!r}"
        )
    if not isinstance(force, bool):
        raise ConfigError(f"force must be true or false, got {force!r}")
    return metric, float(margin), force


def is_better(candidate: float, champion: float, margin: float) -> bool:
    """Lower is better: the candidate must beat the champion by `margin` of the champion's score."""
    return candidate < champion * (1.0 - margin)


def _alias(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    """The version behind `name@alias`, or None when the alias is not set."""
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as err:
        if err.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise


def _move_alias(client: MlflowClient, name: str, alias: str, version: str, tries: int = 5) -> None:
    """Point `alias` at `version` in one step (never delete first); retry a busy database."""
    for attempt in range(tries):
        try:
            client.set_registered_model_alias(name, alias, version)
            return
        except MlflowException as err:
            # SQLite under concurrent writers: "database is locked", or a lost race to insert the
            # alias row first; the alias then exists and setting it again is an update.
            text = str(err).lower()
            if attempt == tries - 1 or not any(s in text for s in ("locked", "unique", "integrity")):
                raise
            time.sleep(0.2 * (attempt + 1))


@dataclass
class _Scorer:
    """Backtests versions of one registered model on one table and windows, each version once."""

    name: str
    history: pd.DataFrame
    n_windows: int
    step: int | None
    season: int
    batch: int
    runtime: Runtime
    results: dict[str, BacktestResult] = field(default_factory=dict)
    horizons: dict[str, int] = field(default_factory=dict)
    folders: dict[str, Path] = field(default_factory=dict)

    def folder(self, version: str) -> Path:
        """The version's forecaster folder, downloaded once."""
        if version not in self.folders:
            self.folders[version] = download(self.name, version)
        return self.folders[version]

    def columns(self, version: str) -> list[str]:
        """The columns the version's forecasts have, from its saved files (no forecast run)."""
        return saved_columns(self.folder(version))

    def __call__(self, version: str) -> BacktestResult:
        if version not in self.results:
            forecaster = Forecaster.load(self.folder(version), runtime=self.runtime)
            self.horizons[version] = forecaster.settings.horizon
            log.info("backtesting %s version %s", self.name, version)
            self.results[version] = backtest_frame(
                forecaster, self.history, self.n_windows, self.step, self.season, self.batch
            )
        return self.results[version]


def _experiment(name: str, root_dir: str) -> str:
    """The gate's experiment; two gates creating it at once both end up using the one created."""
    from forecast.tracking.store import ensure_experiment

    try:
        return ensure_experiment(name, root_dir)
    except MlflowException:
        existing = mlflow.get_experiment_by_name(name)
        if existing is None:
            raise
        return existing.experiment_id


def download(name: str, version: str) -> Path:
    """The forecaster folder of `name` version `version`."""
    from forecast.tracking.resolve import resolve_model

    folder, _ = resolve_model(f"models:/{name}/{version}")
    return folder


def check_columns(scorer: _Scorer, cand: str, champ: str, force: bool) -> list[str]:
    """The champion's output columns the candidate would not write (none: it passes).

    Refused with a ConfigError unless `force`, which logs them as a WARNING instead. The check
    goes onto the active MLflow run's tags: `columns_check` (ok, refused or forced),
    `columns_dropped` and both versions' columns (`candidate_columns`, `champion_columns`).
    """
    have, had = scorer.columns(cand), scorer.columns(champ)
    dropped = [col for col in had if col not in have]
    outcome = "ok" if not dropped else "forced" if force else "refused"
    mlflow.set_tags(
        {
            "columns_check": outcome,
            "columns_dropped": ",".join(dropped),
            "candidate_columns": ",".join(have),
            "champion_columns": ",".join(had),
        }
    )
    if not dropped:
        return dropped
    if not force:
        refusal = ConfigError(
            f"candidate version {cand} would drop output column(s) {dropped} that champion version "
            f"{champ} writes (it writes {have}): readers of the forecast would lose them; promote it "
            "anyway with force=true"
        )
        mlflow.set_tags({"decision": "refused", "reason": str(refusal)})
        raise refusal
    log.warning(
        "force=true: candidate version %s drops output column(s) %s of champion version %s; "
        "readers of the forecast lose them",
        cand,
        dropped,
        champ,
    )
    return dropped


def _score(result: BacktestResult, metric: str, version: str) -> float:
    if metric not in result.metrics:
        raise ConfigError(
            f"metric={metric} needs a quantile model; version {version} forecasts a point: use mase, "
            "mae, rmse or smape"
        )
    return result.metrics[metric]


def promote(
    name: str,
    input_path: str,
    root_dir: str = ".",
    metric: str = "mase",
    margin: float = 0.0,
    force: bool = False,
    n_windows: int = 5,
    step: int | None = None,
    season_length: int | None = None,
    batch_size: int = 4096,
    runtime: Runtime = "auto",
    experiment_name: str = "promotion",
    candidate_alias: str = "candidate",
    champion_alias: str = "champion",
) -> Decision:
    """Backtest `name@candidate` and `name@champion` on the table; move `champion` if the candidate wins."""
    from forecast.tracking.store import use_store

    metric, margin, force = check_options(metric, margin, force)
    n_windows = require_int("n_windows", n_windows)
    step = None if step is None else require_int("step", step)
    use_store(root_dir)
    client = MlflowClient()
    candidate = _alias(client, name, candidate_alias)
    if candidate is None:
        raise ModelNotFoundError(
            f"registered model {name!r} has no @{candidate_alias} version to promote: register one "
            f"with registry.alias={candidate_alias} (pipelines/train.py register=true)"
        )
    cand = str(candidate.version)
    history = read_table(input_path)
    digest = data_digest(input_path)
    folders = {cand: download(name, cand)}  # each version is downloaded once (`_Scorer.folder`)
    folder = folders[cand]
    if season_length is None and model_season_length(folder) is None:
        champion = _alias(client, name, champion_alias)
        if champion is not None:
            version = str(champion.version)
            folder = folders[version] = folders.get(version) or download(name, version)
    season = resolve_season_length(season_length, folder)
    scorer = _Scorer(name, history, n_windows, step, season, batch_size, runtime, folders=folders)

    experiment = _experiment(experiment_name, root_dir)
    with mlflow.start_run(experiment_id=experiment, run_name=f"promote {name} v{cand}") as run:
        mlflow.log_params(
            {
                "name": name,
                "metric": metric,
                "margin": margin,
                "force": force,
                "input": str(input_path),
                "data_digest": digest,
                "n_windows": n_windows,
                "step": step if step is not None else "horizon",
                "season_length": season,
                "candidate_version": cand,
            }
        )
        decision = _decide(client, scorer, name, cand, metric, margin, force, champion_alias)
        decision.run_id = run.info.run_id
        champ = decision.champion
        mlflow.log_param("champion_version", champ or "none")
        for role, version in (("candidate", cand), ("champion", champ)):
            if version is not None and version in scorer.results:
                log_result(scorer.results[version], prefix=f"{role}/", artifacts=role)
        mlflow.set_tags({"decision": "promoted" if decision.promoted else "kept", "reason": decision.reason})
        common = {
            f"{TAG}run_id": decision.run_id,
            f"{TAG}metric": metric,
            f"{TAG}data": str(input_path),
            f"{TAG}data_digest": digest,
        }
        for role, version in (("candidate", cand), ("champion", champ)):
            if version is None:
                continue
            other = champ if role == "candidate" else cand
            outcome = {
                ("candidate", True): "promoted",
                ("candidate", False): "rejected",
                ("champion", True): "replaced",
                ("champion", False): "kept",
            }[(role, decision.promoted)]
            if version == cand and champ == cand:
                outcome = "champion"  # already was
            tags = {
                **common,
                f"{TAG}role": role,
                f"{TAG}decision": outcome,
                f"{TAG}compared_with": other or "",
            }
            score = decision.scores.get(role)
            if score is not None:
                tags[f"{TAG}{metric}"] = f"{score:.6g}"
            for key, value in tags.items():
                client.set_model_version_tag(name, version, key, value)
    log.info("%s %s: %s", name, "promoted" if decision.promoted else "kept the champion", decision.reason)
    return decision


def _decide(
    client: MlflowClient,
    scorer: _Scorer,
    name: str,
    cand: str,
    metric: str,
    margin: float,
    force: bool,
    champion_alias: str,
) -> Decision:
    """Compare against the current champion and move the alias; redo it if the champion moved."""
    champion = _alias(client, name, champion_alias)
    for _ in range(ROUNDS):
        champ = None if champion is None else str(champion.version)
        decision = Decision(False, "", name, metric, cand, champ)
        if champ is not None and champ != cand:
            check_columns(scorer, cand, champ, force)  # before the backtests: refused at once
        else:
            mlflow.set_tags({"columns_check": "skipped", "columns_dropped": ""})  # nothing to lose
        cand_result = scorer(cand)
        decision.scores["candidate"] = _score(cand_result, metric, cand)
        if champ == cand:
            decision.promoted = True
            decision.reason = f"version {cand} already is @{champion_alias}"
            return decision
        if champ is not None:
            champ_result = scorer(champ)
            if scorer.horizons[champ] != scorer.horizons[cand]:
                raise ConfigError(
                    f"the candidate (version {cand}) forecasts {scorer.horizons[cand]} steps and the "
                    f"champion (version {champ}) {scorer.horizons[champ]}: the gate compares models "
                    "on the same windows, so of the same horizon"
                )
            decision.scores["champion"] = _score(champ_result, metric, champ)
        c, b = decision.scores["candidate"], decision.scores.get("champion")
        if champ is None:
            decision.promoted, decision.reason = (
                True,
                f"no @{champion_alias} yet: version {cand} ({metric} {c:.4g})",
            )
        elif force:
            decision.promoted = True
            decision.reason = (
                f"force=true: version {cand} ({metric} {c:.4g}) replaces version {champ} ({b:.4g})"
            )
        elif not (math.isfinite(c) and math.isfinite(b)):
            decision.reason = f"{metric} is undefined on these windows (candidate {c}, champion {b})"
        elif is_better(c, b, margin):
            decision.promoted = True
            decision.reason = (
                f"version {cand} {metric} {c:.4g} beats version {champ} {b:.4g} by more than {margin:g}"
            )
        else:
            need = b * (1.0 - margin)
            decision.reason = (
                f"candidate version {cand} {metric} {c:.4g} is not below {need:.4g} (champion version "
                f"{champ} {b:.4g}, margin {margin:g}): kept version {champ}"
            )
        if not decision.promoted:
            return decision
        # Another promotion may have moved the champion while we backtested: decide again then.
        now = _alias(client, name, champion_alias)
        if (None if now is None else str(now.version)) != champ:
            log.warning(
                "@%s moved to version %s during the gate: comparing again", champion_alias, now.version
            )
            champion = now
            continue
        _move_alias(client, name, champion_alias, cand)
        return decision
    decision = Decision(False, "", name, metric, cand, None if champion is None else str(champion.version))
    decision.reason = f"@{champion_alias} kept moving during the gate ({ROUNDS} comparisons): try again"
    return decision
