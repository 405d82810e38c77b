"""Calibrated intervals: empirical coverage on held-out windows (issue 10, item 3).

    python bench/intervals.py [--task etth1|demo|both] [--data DIR] [--quick] [--seed 1]
                              [--levels 80 95] [--set KEY=VALUE ...]

Each task trains one model (one seed) through the project's path (`conf/train.yaml` composed,
`forecast.training.fit`), calibrates it as `build_forecaster` does at the end of a training
(`window_residuals` on every validation window, then `calibrate`), and scores the intervals the
batch forecast would write through `forecast.backtest.backtest_frame` (bounds as served):

- `etth1`: B2 ETTh1 OT univariate, input 96, horizon 96 (`experiment=etth1_univariate`). The
  model sees rows [0, 11520) only; calibration on the protocol's validation windows (targets in
  [8640, 11520), 2,785 windows), test on every test window (targets in [11520, 14400), stride 1).
- `demo`: the embedded data with the default train config (69 M4 Hourly series, input 168,
  horizon 48): calibration on the validation windows, test on the config's own test split (one
  window per series each).

One JSON line per task, interval scale (`series`, `window`: the same model, calibrated in each
unit; `forecast.intervals`) and level: test `coverage` and mean `width` (in data units), and the
validation figures: `val_coverage` (the calibration windows themselves: at least the level by
construction, up to float32 rounding of the bounds; a check of the arithmetic, not evidence) and
`val_split_coverage` (quantiles from the earlier half of the validation windows, by cutoff then
id, scored on the later half: what validation alone says about holding the level on later
windows, and what chooses between the scales). Not a timing: any budget will do.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import protocol  # noqa: E402

QUICK = ("trainer.max_epochs=2", "trainer.limit_train_batches=25")


def fit_model(overrides: list[str], levels: list[int], seed: int):
    """One model (one seed) from the composed config; its intervals come from `calibrated`."""
    from forecast.training import build_forecaster, fit

    with tempfile.TemporaryDirectory(prefix="bench-intervals-") as tmp:
        cfg = common.compose(
            [*overrides, f"seed={seed}", f"intervals=[{','.join(map(str, levels))}]"], Path(tmp)
        )
        started = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):  # Lightning's test table: stdout is for results
            result = fit(cfg)
        forecaster = build_forecaster(result.module, result.datamodule)
        seconds = time.perf_counter() - started
    return forecaster, result, seconds


def calibrated(forecaster, dm, levels: list[int], scale: str):
    """The forecaster with the training pipeline's calibration (every validation window) in `scale`."""
    from forecast.calibration import window_residuals
    from forecast.intervals import calibrate, min_windows

    scores = window_residuals(forecaster, dm.datasets["val"], dm.eval_batch_size, scale)
    forecaster.intervals = calibrate(scores, levels, "validation", scale)
    if forecaster.intervals is None or forecaster.intervals.levels != levels:
        needs = ", ".join(f"{level}%: {min_windows(level)}" for level in levels)
        raise RuntimeError(f"too few validation windows per horizon step for the levels ({needs})")
    return forecaster


def window_units(forecaster, history: pd.DataFrame, n_windows: int) -> np.ndarray:
    """(W,) the score unit of each of the backtest's windows (`n_windows` cutoffs per series, step
    1, series-major, oldest first), from the forecaster's own scaling of the cut histories."""
    from forecast.backtest import cutoff_ends
    from forecast.blocks import SeriesBlock
    from forecast.intervals import score_units

    block = SeriesBlock.from_frame(forecaster.validate(history).frame, forecaster.columns)
    ends = cutoff_ends(block, forecaster.settings.horizon, n_windows, 1).reshape(-1)
    series = np.repeat(np.arange(len(block)), n_windows)
    cut = SeriesBlock(block.ids[series], block.starts[series], ends, block.values, block.last_time[series])
    scaled = forecaster.scaled_windows(cut)
    return scaled.scale.astype(np.float64) * score_units(forecaster.intervals.scale, scaled.windows)


def split_coverage(table: pd.DataFrame, unit: np.ndarray, horizon: int, level: int) -> float:
    """Quantiles from the earlier half of the windows (by cutoff, then id), coverage of the later."""
    from forecast.intervals import conformal_quantile

    errors = np.abs(table["y"] - table["y_hat"]).to_numpy(np.float64).reshape(-1, horizon) / unit[:, None]
    keys = table.iloc[::horizon][["cutoff", "unique_id"]].reset_index(drop=True)
    order = keys.sort_values(["cutoff", "unique_id"], kind="stable").index.to_numpy()
    first, second = order[: len(order) // 2], order[len(order) // 2 :]
    later = errors[second]
    return float((later <= conformal_quantile(errors[first], level)).sum() / np.isfinite(later).sum())


def score(forecaster, test_history, val_history, n_test: int, n_val: int, season: int) -> dict:
    """Coverage and width per level on the test windows and on the validation windows."""
    from forecast.backtest import backtest_frame

    H = forecaster.settings.horizon
    test = backtest_frame(forecaster, test_history, n_windows=n_test, step=1, season_length=season)
    val = backtest_frame(forecaster, val_history, n_windows=n_val, step=1, season_length=season)
    unit = window_units(forecaster, val_history, n_val)
    assert len(unit) * H == len(val.table), "every validation cutoff is scored"
    split = {level: split_coverage(val.table, unit, H, level) for level in forecaster.intervals.levels}
    return {"test": test, "val": val, "split": split}


def lines(task: str, forecaster, scores: dict, fitted, seconds: float, seed: int, fields: dict) -> list[dict]:
    """One result line per level."""
    test, val = scores["test"], scores["val"]
    intervals = forecaster.intervals
    out = []
    for level in intervals.levels:
        coverage = test.metrics[f"coverage_{level}"]
        out.append(
            {
                "bench": "intervals",
                "dataset": task,
                "model": "lstm",
                "members": 1,
                "seed": seed,
                "interval_scale": intervals.scale,
                "level": level,
                "coverage": round(100 * coverage, 2),
                "miss_points": round(100 * coverage - level, 2),
                "width": round(test.metrics[f"width_{level}"], 4),
                "val_coverage": round(100 * val.metrics[f"coverage_{level}"], 2),
                "val_split_coverage": round(100 * scores["split"][level], 2),
                "val_width": round(val.metrics[f"width_{level}"], 4),
                "test_windows": test.n_windows,
                "calibration_windows": int(intervals.windows.min()),
                "test_mae": round(test.metrics["mae"], 4),
                "val_mae": round(val.metrics["mae"], 4),
                "epochs": int(fitted.trainer.current_epoch),
                "steps": int(fitted.trainer.global_step),
                "train_s": round(seconds, 1),
                **fields,
            }
        )
    return out


def every_scale(
    task, forecaster, fitted, seconds, args, levels, test_history, val_history, n_test, n_val, fields
) -> list[dict]:
    """The same model's lines for each interval scale (calibration is after training: one fit)."""
    from forecast.intervals import SCALES

    out = []
    for scale in SCALES:
        calibrated(forecaster, fitted.datamodule, levels, scale)
        scores = score(forecaster, test_history, val_history, n_test, n_val, fitted.datamodule.season_length)
        out += lines(task, forecaster, scores, fitted, seconds, args.seed, fields)
    return out


def run_etth1(args, levels: list[int], tmp: Path) -> list[dict]:
    """B2 ETTh1 OT univariate, input 96, horizon 96; every validation and test window."""
    L, H = 96, 96
    frame = protocol.load_etth1(common.data_dir(args.data))
    values, _, _ = protocol.etth1_standardized(frame, (protocol.ETT_TARGET,))
    full = pd.DataFrame(
        {
            "unique_id": protocol.ETT_TARGET,
            "ds": frame["date"].to_numpy(),
            "y": values[:, 0].astype(np.float32),
        }
    )
    train_rows = full.iloc[: protocol.ETT_VAL_END]  # never a test row
    path = tmp / "etth1_ot.parquet"
    train_rows.to_parquet(path, index=False)
    overrides = [
        "experiment=etth1_univariate",
        f"data.path={path}",
        f"data.input_size={L}",
        f"data.horizon={H}",
        "data.test_size=0",
        *(QUICK if args.quick else ()),
        *args.overrides,
    ]
    forecaster, fitted, seconds = fit_model(overrides, levels, args.seed)
    n = protocol.ETT_TEST_END - protocol.ETT_VAL_END - H + 1  # 2,785 windows in each part
    test_history = full.iloc[: protocol.ETT_TEST_END]
    fields = {"setting": "univariate OT", "input_size": L}
    return every_scale(
        "etth1", forecaster, fitted, seconds, args, levels, test_history, train_rows, n, n, fields
    )


def run_demo(args, levels: list[int]) -> list[dict]:
    """The embedded data with the default train config: its own validation and test splits."""
    overrides = [*(QUICK if args.quick else ()), *args.overrides]
    forecaster, fitted, seconds = fit_model(overrides, levels, args.seed)
    dm = fitted.datamodule
    histories = (dm.history(None), dm.history("test"))  # test: up to the end; validation: before test
    fields = {"input_size": dm.input_size}
    return every_scale(
        "m4_hourly_sample", forecaster, fitted, seconds, args, levels, *histories, 1, 1, fields
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", choices=["etth1", "demo", "both"], default="both")
    parser.add_argument("--data", type=Path, default=None, help="benchmark data folder (ETTh1)")
    parser.add_argument("--quick", action="store_true", help="a training budget of 50 steps")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--levels", type=int, nargs="+", default=[80, 95])
    parser.add_argument("--set", dest="overrides", nargs="+", default=[], metavar="KEY=VALUE")
    parser.add_argument("-v", "--verbose", action="store_true", help="show Lightning's logs")
    args = parser.parse_args(argv)
    common.quiet(args.verbose)
    levels = sorted(set(args.levels))
    with tempfile.TemporaryDirectory(prefix="intervals-") as tmp:
        if args.task in ("etth1", "both"):
            for record in run_etth1(args, levels, Path(tmp)):
                common.emit(record)
        if args.task in ("demo", "both"):
            for record in run_demo(args, levels):
                common.emit(record)


if __name__ == "__main__":
    main()
