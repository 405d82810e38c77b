"""The backtest pipeline's job: resolve a saved model, backtest it on a table
(`forecast.backtest`), write the table and log one MLflow run (metrics, table, error plot).

A backtest that refits trains models, and this module sits below the training job (the promotion
gate uses its helpers): the refits come in as a `Refitter`, `forecast.refit.refit_backtest`,
which the pipeline and the Python API pass.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd

from forecast.backtest import (
    REFIT_STEPS,
    BacktestResult,
    RefitPlan,
    RefitStats,
    backtest_frame,
    refit_plan,
)
from forecast.data.io import read_table, write_parquet_atomic
from forecast.errors import ConfigError, require_int
from forecast.forecaster import Forecaster, Runtime
from forecast.intervals import check_levels

# The backtest's logger: its lines keep the name they had before the job had a module.
log = logging.getLogger("forecast.backtest")

CONFIG_FILE = "config.yaml"  # the training config logged beside the model's files


class Refitter(Protocol):
    """Trains a backtest's refits and scores their windows (`forecast.refit.refit_backtest`)."""

    def __call__(
        self,
        forecaster: Forecaster,
        history: pd.DataFrame,
        n_windows: int,
        step: int | None,
        season_length: int,
        batch_size: int,
        calibrate_levels: Sequence[int],
        plan: RefitPlan,
    ) -> BacktestResult: ...


def model_season_length(folder: str | Path) -> int | None:
    """`data.season_length` of the training config saved with the model, if there is one."""
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        return None
    from omegaconf import OmegaConf

    config = OmegaConf.load(path)
    value = OmegaConf.select(config, "data.season_length", default=None)
    if value is None and OmegaConf.select(config, "data", default=None) is not None:
        # Not set in training: the data module took the frequency's own period, as here.
        import json

        from forecast.data.calendar import season_length_for

        settings = Path(folder) / "model.json"
        if settings.is_file():
            return season_length_for(json.loads(settings.read_text()).get("freq"))
    return int(value) if value is not None else None


def resolve_season_length(option: int | str | None, model_folder: str | Path | None) -> int:
    """The option when given, else the model's own season length; MASE and the baseline need one."""
    if option is not None:
        return require_int("season_length", option)
    known = model_season_length(model_folder) if model_folder is not None else None
    if known is None:
        raise ConfigError(
            "the model does not say its season length (no data.season_length in its config): "
            "set season_length=N (24 for hourly data with a daily cycle, 1 for none)"
        )
    return max(int(known), 1)


def data_digest(path: str | Path) -> str:
    """sha256 of the input file (or of a folder's files, names included): which data was scored."""
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    digest = hashlib.sha256()
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode() + b"\0")
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return "sha256:" + digest.hexdigest()


def plot_errors(result: BacktestResult):
    """MAE by horizon step and by cutoff, model against seasonal naive: where the model wins."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.6))
    for ax, table, x, label in (
        (left, result.by_step, "step", "horizon step"),
        (right, result.by_window, "window", "cutoff (0 = oldest window)"),
    ):
        ax.plot(table[x], table["mae"], marker="o", ms=3, label="model")
        ax.plot(table[x], table["snaive_mae"], marker="o", ms=3, ls="--", label="seasonal naive")
        ax.set_xlabel(label)
        ax.set_ylabel("MAE")
        ax.grid(alpha=0.3)
    left.set_title("MAE by horizon step", fontsize=10)
    right.set_title("MAE by cutoff", fontsize=10)
    left.legend(fontsize=8)
    fig.tight_layout()
    return fig


def log_result(
    result: BacktestResult,
    prefix: str = "backtest/",
    artifacts: str = "backtest",
    table_file: str | Path | None = None,
) -> None:
    """Log the metrics (overall, by step, by window), the table and the plot to the active run.

    `table_file`: the table already written (the pipeline's output), logged instead of a new copy.
    """
    import matplotlib.pyplot as plt
    import mlflow
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = [Metric(f"{prefix}{k}", float(v), now, 0) for k, v in result.metrics.items() if np.isfinite(v)]
    for table, key in ((result.by_step, "step"), (result.by_window, "window")):
        for name in [col for col in table.columns if col in result.metrics]:
            for x, value in zip(table[key], table[name], strict=True):
                if np.isfinite(value):
                    metrics.append(Metric(f"{prefix}{key}_{name}", float(value), now, int(x)))
    run_id = mlflow.active_run().info.run_id
    for start in range(0, len(metrics), 1000):  # MLflow takes at most 1000 metrics per request
        mlflow.MlflowClient().log_batch(run_id, metrics=metrics[start : start + 1000])
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if table_file is None:
            write_parquet_atomic(result.table, folder / "forecasts.parquet")
        else:  # a link, not a second copy: the artifact store copies what it points to
            (folder / "forecasts.parquet").symlink_to(Path(table_file).resolve())
        result.by_window.to_csv(folder / "by_window.csv", index=False)
        result.by_step.to_csv(folder / "by_step.csv", index=False)
        refits = result.info.get("refits")
        if refits:
            pd.DataFrame([vars(r) for r in refits]).to_csv(folder / "refits.csv", index=False)
        if result.calibrated is not None:  # the same file a model keeps beside model.json
            result.calibrated.save(folder)
        fig = plot_errors(result)
        fig.savefig(folder / "errors.png", dpi=110)
        plt.close(fig)
        mlflow.log_artifacts(str(folder), artifacts)


def run_backtest(
    model_uri: str,
    input_path: str,
    output_path: str | None = None,
    root_dir: str = ".",
    n_windows: int = 5,
    step: int | None = None,
    season_length: int | None = None,
    refit: str | int | None = "none",
    batch_size: int = 4096,
    runtime: Runtime = "auto",
    experiment_name: str = "backtest",
    calibrate_levels: Sequence[int] = (),
    refit_mode: str = "warm",
    refit_steps: int | None = None,
    refit_val_size: int | None = None,
    refit_lr: float | None = None,
    refitter: Refitter | None = None,
) -> BacktestResult:
    """Backtest a logged or registered model on a table; write the table, log one MLflow run.

    `calibrate_levels`: also compute conformal quantiles from the backtest's errors and log them
    (metrics `backtest/calibrated_qNN`, per step and overall, and `backtest/intervals.json`).
    `refit`: `none`, or `every:N` to refit every N windows (`refit_mode` warm or scratch, at most
    `refit_steps` steps each, default `forecast.backtest.REFIT_STEPS`, validated on the last
    `refit_val_size` steps of each series, default the model's own, at the learning rate
    `refit_lr`, default the model's own), trained by `refitter`
    (`forecast.refit.refit_backtest`); the table gains a `refit` column and the run the per-refit
    metrics `refit/<r>/...` (`refit_metrics`) and `backtest/refits.csv`.
    """
    import mlflow

    from forecast.data.staging import prepare_output
    from forecast.tracking.resolve import resolve_model
    from forecast.tracking.store import ensure_experiment, use_store

    plan = refit_plan(
        refit, refit_mode, refit_steps, refit_val_size, refit_lr
    )  # bad settings fail before any download
    if plan is not None and refitter is None:
        raise ValueError("refit=every:N trains models: pass refitter=forecast.refit.refit_backtest")
    n_windows = require_int("n_windows", n_windows)
    step = None if step is None else require_int("step", step)
    season_length = None if season_length is None else require_int("season_length", season_length)
    calibrate_levels = check_levels(calibrate_levels)
    use_store(root_dir)
    if output_path:
        prepare_output(output_path)
    folder, ref = resolve_model(model_uri)
    m = resolve_season_length(season_length, folder)
    forecaster = Forecaster.load(folder, runtime=runtime)
    history = read_table(input_path)
    if plan is None:
        result = backtest_frame(forecaster, history, n_windows, step, m, batch_size, calibrate_levels)
    else:
        assert refitter is not None
        result = refitter(forecaster, history, n_windows, step, m, batch_size, calibrate_levels, plan)
    _report_intervals(forecaster, result)
    if output_path:
        write_parquet_atomic(result.table, output_path, ref.metadata())
    experiment = ensure_experiment(experiment_name, root_dir)
    digest = data_digest(input_path)
    with mlflow.start_run(experiment_id=experiment, run_name=f"backtest {ref.name or model_uri}"):
        mlflow.set_tags(
            {
                "model_uri": model_uri,
                "model_name": ref.name,
                "model_version": ref.version,
                "model_run_id": ref.run_id,
                "data_digest": digest,
            }
        )
        mlflow.log_params(
            {
                "model_uri": model_uri,
                "input": str(input_path),
                "n_windows": n_windows,
                "step": result.info["step"],
                "season_length": m,
                "horizon": forecaster.settings.horizon,
                "refit": plan.refit if plan is not None else "none",
                "refit_mode": plan.mode if plan is not None else refit_mode,
                "refit_steps": plan.steps if plan is not None else refit_steps or REFIT_STEPS,
                "refit_val_size": plan.val_size if plan is not None else refit_val_size,
                "refit_lr": plan.lr if plan is not None else refit_lr,
                "series": result.n_series,
                "windows_scored": result.n_windows,
                "windows_skipped": result.skipped,
                "calibrate": calibrate_levels,
            }
        )
        mlflow.log_metric("backtest/seconds", result.seconds)
        if result.info.get("refits"):
            mlflow.log_metrics(refit_metrics(result.info["refits"]))
        log_result(result, table_file=output_path or None)
    return result


def refit_metrics(refits: Sequence[RefitStats]) -> dict[str, float]:
    """Per refit r: `refit/<r>/val_loss` (the best value of the metric early stopping watched,
    named after it), `steps`, `seconds`, `series`, and `origin` (Unix seconds, or the step)."""
    out: dict[str, float] = {}
    for r in refits:
        key = f"refit/{r.refit}"
        out[f"{key}/{r.monitor.replace('/', '_')}"] = float(r.best)
        out[f"{key}/steps"] = float(r.steps)
        out[f"{key}/seconds"] = float(r.seconds)
        out[f"{key}/series"] = float(r.series)
        out[f"{key}/origin"] = r.origin_number()
    return {k: v for k, v in out.items() if np.isfinite(v)}


def _report_intervals(forecaster: Forecaster, result: BacktestResult) -> None:
    """Log the coverage of the model's intervals and the backtest's own quantiles beside its."""
    m, own = result.metrics, forecaster.intervals
    for level in own.levels if own is not None else []:
        log.info(
            "%d%% intervals (%s-calibrated) covered %.1f%% of the backtest's targets, mean width %.4g",
            level,
            own.source,
            100 * m[f"coverage_{level}"],
            m[f"width_{level}"],
        )
    if result.calibrated is None:
        return
    stored = dict(zip(own.levels, own.quantiles, strict=True)) if own is not None else {}
    for level, q in zip(result.calibrated.levels, result.calibrated.quantiles, strict=True):
        mine = f" (the model's: {stored[level].mean():.4g})" if level in stored else ""
        log.info(
            "%d%% conformal half-width from the backtest: %.4g series scales on average%s",
            level,
            q.mean(),
            mine,
        )
