"""Rolling-origin backtest of a saved model: how users choose models and the gate promotes them.

For every series and each of `n_windows` cutoffs (the last leaves exactly `horizon` steps after
it, earlier ones step back by `step`), the model forecasts the `horizon` steps after the cutoff
from the history up to it, without refitting. All windows of all series are one array of index
arithmetic over the series' values (`SeriesBlock`), scaled and padded by the forecaster's own
`scaled_windows` and pushed through `predict_scaled` in large batches: no loop per window or
per series. The same windows are scored for the seasonal-naive baseline.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from forecast.blocks import SeriesBlock
from forecast.data.io import read_table, write_parquet_atomic
from forecast.errors import ConfigError, DataValidationError, require_int
from forecast.forecaster import Forecaster, Runtime
from forecast.intervals import ConformalIntervals, calibrate, check_levels, interval_scores, score_units
from forecast.layout import check_finite

log = logging.getLogger(__name__)

# Metrics where lower is better: the ones the promotion gate may compare on.
LOWER_IS_BETTER = ("mae", "rmse", "smape", "mase", "pinball")
CONFIG_FILE = "config.yaml"  # the training config logged beside the model's files


@dataclass
class BacktestResult:
    """The forecasts of every window and their scores, beside the seasonal-naive baseline."""

    table: pd.DataFrame  # unique_id, cutoff, ds, y, y_hat, [y_hat_qNN ...], [y_hat_lo_80 ...]
    # overall: mae, rmse, smape, mase, [pinball, coverage], [coverage_80, width_80 ...], snaive_*
    metrics: dict[str, float]
    by_window: pd.DataFrame  # one row per window (0 = oldest cutoff): the same metrics
    by_step: pd.DataFrame  # one row per horizon step (1..H): the same metrics
    n_series: int
    n_windows: int  # windows scored (series x cutoffs with enough history)
    skipped: int  # windows left out: history up to the cutoff shorter than season_length + 1
    season_length: int
    seconds: float
    info: dict[str, Any] = field(default_factory=dict)
    calibrated: ConformalIntervals | None = None  # conformal quantiles of these windows' errors


def check_refit(refit: str | None) -> None:
    """Only the saved model is backtested in this version: any refit is a ConfigError."""
    if refit in (None, "none", False):
        return
    raise ConfigError(
        f"refit={refit} is not supported yet: the backtest scores the saved model as it is; use refit=none"
    )


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


def levels_to_calibrate(calibrate: object, levels: Sequence[int]) -> list[int]:
    """The levels to calibrate from a backtest: `levels` when `calibrate` is true, none when false."""
    if not isinstance(calibrate, bool):
        raise ConfigError(
            f"calibrate must be true or false, got {calibrate!r} (levels go in intervals=[80,95])"
        )
    return check_levels(levels) if calibrate else []


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


def cutoff_ends(block: SeriesBlock, horizon: int, n_windows: int, step: int) -> np.ndarray:
    """(n_series, n_windows) exclusive end row of each cutoff's history, oldest cutoff first."""
    back = step * np.arange(n_windows - 1, -1, -1, dtype=np.int64)  # (K,) K-1 steps back .. 0
    return block.ends[:, None] - horizon - back[None, :]


def seasonal_scale(block: SeriesBlock, ends: np.ndarray, series: np.ndarray, m: int) -> np.ndarray:
    """(W,) in-sample seasonal-naive MAE of each window's history (MASE's denominator).

    Prefix sums of |y_t - y_{t-m}| over all rows, so every window costs two lookups.
    """
    values = block.values.astype(np.float64)
    lengths = block.ends - block.starts
    row_start = np.repeat(block.starts, lengths)  # (rows,) first row of each row's series
    rows = np.arange(len(values))
    diff = np.full(len(values), np.nan)
    diff[m:] = np.abs(values[m:] - values[:-m])
    usable = (rows - m >= row_start) & np.isfinite(diff)
    total = np.concatenate([[0.0], np.cumsum(np.where(usable, diff, 0.0))])
    count = np.concatenate([[0], np.cumsum(usable)])
    first = block.starts[series] + m
    n = count[ends] - count[first]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, (total[ends] - total[first]) / np.maximum(n, 1), np.nan)


def _group_scores(
    y: np.ndarray,
    point: np.ndarray,
    scale: np.ndarray,
    mask: np.ndarray,
    groups: np.ndarray,
    n_groups: int,
    quantiles: list[float] | None = None,
    qpred: np.ndarray | None = None,
    cells: dict[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """MAE, RMSE, sMAPE, MASE (and pinball, coverage) per group of cells, all cells at once.

    `y`, `point`, `mask`, `groups`: (W, H); `scale`: (W,); `qpred`: (W, H, Q); `cells`: more
    (W, H) per-cell scores to average (interval coverage and width). Means are over the cells
    in `mask` (observed target, baseline defined), as the training metrics weigh them.
    """
    g = groups.ravel()
    w = mask.astype(np.float64)

    def mean(x: np.ndarray, weight: np.ndarray = w) -> np.ndarray:
        x = np.where(weight > 0, x, 0.0)
        num = np.bincount(g, weights=(x * weight).ravel(), minlength=n_groups)
        den = np.bincount(g, weights=weight.ravel(), minlength=n_groups)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, num / np.maximum(den, 1e-300), np.nan)

    with np.errstate(invalid="ignore", divide="ignore"):
        err = np.abs(point - y)
        denom = np.abs(y) + np.abs(point)
        smape = np.where(denom > 0, 200.0 * err / np.where(denom > 0, denom, 1.0), 0.0)
        scaled = err / scale[:, None]
    mase_w = w * (np.isfinite(scale) & (scale > 0))[:, None]
    out = {
        "mae": mean(err),
        "rmse": np.sqrt(mean(err * err)),
        "smape": mean(smape),
        "mase": mean(scaled, mase_w),
    }
    if quantiles and qpred is not None:
        q = np.asarray(quantiles, dtype=np.float64)
        diff = y[..., None] - qpred  # (W, H, Q)
        out["pinball"] = mean(np.maximum(q * diff, (q - 1.0) * diff).mean(axis=-1))
        inside = (qpred[..., 0] <= y) & (y <= qpred[..., -1])
        out["coverage"] = mean(inside.astype(np.float64))
    for name, values in (cells or {}).items():
        out[name] = mean(values)
    return out


def backtest_frame(
    forecaster: Forecaster,
    history: pd.DataFrame,
    n_windows: int,
    step: int | None = None,
    season_length: int = 1,
    batch_size: int = 4096,
    calibrate_levels: Sequence[int] = (),
) -> BacktestResult:
    """Rolling-origin forecasts of every series at `n_windows` cutoffs `step` apart, scored.

    A model with intervals also gets their coverage and width per level; `calibrate_levels`
    computes conformal quantiles from these windows' errors (`BacktestResult.calibrated`).
    """
    started = time.perf_counter()
    s = forecaster.settings
    H = s.horizon
    n_windows = require_int("n_windows", n_windows)
    step = H if step is None else require_int("step", step)
    m = require_int("season_length", season_length)
    calibrate_levels = check_levels(calibrate_levels)
    c = forecaster.columns
    frame = forecaster.validate(history).frame
    if forecaster.encoder is not None:
        # Covariates encoded once for the whole table; each window reads its own rows (its
        # input window, and for future-known ones its horizon), as a forecast at that origin would.
        block = forecaster.covariate_block(frame, need_future=False)
    else:
        block = SeriesBlock.from_frame(frame, c)
    times = frame[c.time_col].to_numpy()

    ends = cutoff_ends(block, H, n_windows, step)  # (n, K)
    usable = ends - block.starts[:, None] >= m + 1  # a season for the baseline, one more for MASE
    series, window = np.nonzero(usable)  # (W,) each, series-major, oldest cutoff first
    end = ends[series, window]
    skipped = int(usable.size - len(series))
    if len(series) == 0:
        raise DataValidationError(
            f"no series is long enough to backtest: each cutoff needs at least season_length + 1 = "
            f"{m + 1} steps before it and horizon = {H} after it; with n_windows={n_windows} and "
            f"step={step} the longest series ({int((block.ends - block.starts).max())} steps) needs "
            f"{m + 1 + H + step * (n_windows - 1)}: lower n_windows or step, or give longer series"
        )
    if skipped:
        log.info("%d of %d windows skipped: too little history before their cutoff", skipped, usable.size)

    # Each window is a series cut at its cutoff: the forecaster scales and pads it as it would
    # the whole series, from the history up to the cutoff only (no look-ahead in the scaling of
    # unseen series either).
    cut = SeriesBlock(
        ids=block.ids[series],
        starts=block.starts[series],
        ends=end,
        values=block.values,
        last_time=times[end - 1],
        covariates=None if block.covariates is None else block.covariates.take(series).ahead_at(end),
    )
    scaled = forecaster.scaled_windows(cut)
    preds = forecaster.predict_scaled(
        scaled.windows, batch_size, scaled.step, scaled.series, scaled.covariates, scaled.loc, scaled.scale
    )  # (W, H, 1 + Q): y_hat, then the quantiles
    preds = preds * scaled.scale[:, None, None] + scaled.loc[:, None, None]
    check_finite(preds, cut.ids)

    target = end[:, None] + np.arange(H)  # (W, H) rows of the forecast steps
    y = block.values[target].astype(np.float64)
    snaive = block.values[end[:, None] - m + np.arange(H) % m].astype(np.float64)  # last season, tiled
    scale = seasonal_scale(block, end, series, m)
    mask = np.isfinite(y) & np.isfinite(snaive)

    quantiles = list(s.quantiles)
    point = preds[:, :, 0].astype(np.float64)  # y_hat: a quantile or distribution model's median
    qpred = np.sort(preds[:, :, 1:].astype(np.float64), axis=-1) if quantiles else None
    intervals = forecaster.intervals
    bounds = intervals.bounds(point, scaled.scale, scaled.windows) if intervals is not None else {}
    cells = interval_scores(y, bounds, intervals.levels) if intervals is not None else {}
    steps = np.broadcast_to(np.arange(H), (len(end), H))
    windows = np.broadcast_to(window[:, None], (len(end), H))
    overall = np.zeros((len(end), H), dtype=np.int64)
    groupings = {"overall": (overall, 1), "step": (steps, H), "window": (windows, n_windows)}
    scores: dict[str, dict[str, np.ndarray]] = {}
    for name, (groups, n) in groupings.items():
        model = _group_scores(y, point, scale, mask, groups, n, quantiles, qpred, cells)
        base = _group_scores(y, snaive, scale, mask, groups, n)
        scores[name] = {**model, **{f"snaive_{k}": v for k, v in base.items()}}

    metrics = {k: float(v[0]) for k, v in scores["overall"].items()}
    if quantiles:
        metrics["coverage_nominal"] = float(max(quantiles) - min(quantiles))
    by_step = pd.DataFrame({"step": np.arange(1, H + 1), **scores["step"]})
    calibrated = None
    if calibrate_levels:
        # The conformity scores of forecast.intervals, in the unit of the model's own intervals.
        kind = intervals.scale if intervals is not None else "series"
        unit = scaled.scale.astype(np.float64) * score_units(kind, scaled.windows)
        errors = np.abs(y - point) / unit[:, None]  # NaN where y is missing
        calibrated = calibrate(errors, calibrate_levels, "backtest", kind)
    if calibrated is not None:
        for level, q in zip(calibrated.levels, calibrated.quantiles, strict=True):
            by_step[f"calibrated_q{level}"] = q
            metrics[f"calibrated_q{level}"] = float(q.mean())  # the mean half-width, in series scales
    cutoff_times = pd.Series(times[end - 1])
    by_window = pd.DataFrame(
        {
            "window": np.arange(n_windows),
            "steps_before_last": step * np.arange(n_windows - 1, -1, -1),
            "series": np.bincount(window, minlength=n_windows),
            # Series may end at different times: the latest cutoff of each window names it.
            "cutoff": cutoff_times.groupby(window).max().reindex(range(n_windows)).to_numpy(),
            **scores["window"],
        }
    )

    table = pd.DataFrame(
        {
            c.id_col: np.repeat(cut.ids, H),
            "cutoff": np.repeat(cut.last_time, H),
            c.time_col: times[target].reshape(-1),
            c.target_col: y.reshape(-1).astype(np.float32),
        }
    )
    for q, name in enumerate(s.output_columns):  # the forecast's own columns, in its order
        table[name] = preds[:, :, q].reshape(-1)
    for name, values in bounds.items():
        table[name] = values.reshape(-1).astype(np.float32)
    seconds = time.perf_counter() - started
    log.info(
        "backtest: %d series x %d cutoffs (%d windows, %d skipped) in %.2fs: mae %.4g (seasonal naive %.4g)",
        len(block),
        n_windows,
        len(end),
        skipped,
        seconds,
        metrics["mae"],
        metrics["snaive_mae"],
    )
    return BacktestResult(
        table=table,
        metrics=metrics,
        by_window=by_window,
        by_step=by_step,
        n_series=len(block),
        n_windows=len(end),
        skipped=skipped,
        season_length=m,
        seconds=seconds,
        info={"step": step, "cutoffs": n_windows, "unseen_windows": scaled.unseen, "padded": scaled.padded},
        calibrated=calibrated,
    )


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
    refit: str | None = "none",
    batch_size: int = 4096,
    runtime: Runtime = "auto",
    experiment_name: str = "backtest",
    calibrate_levels: Sequence[int] = (),
) -> BacktestResult:
    """Backtest a logged or registered model on a table; write the table, log one MLflow run.

    `calibrate_levels`: also compute conformal quantiles from the backtest's errors and log them
    (metrics `backtest/calibrated_qNN`, per step and overall, and `backtest/intervals.json`).
    """
    import mlflow

    from forecast.data.staging import prepare_output
    from forecast.tracking.resolve import resolve_model
    from forecast.tracking.store import ensure_experiment, use_store

    check_refit(refit)
    n_windows = require_int("n_windows", n_windows)  # bad settings fail before any download
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
    result = backtest_frame(forecaster, history, n_windows, step, m, batch_size, calibrate_levels)
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
                "refit": "none",
                "series": result.n_series,
                "windows_scored": result.n_windows,
                "windows_skipped": result.skipped,
                "calibrate": calibrate_levels,
            }
        )
        mlflow.log_metric("backtest/seconds", result.seconds)
        log_result(result, table_file=output_path or None)
    return result


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
