"""B2, ETTh1: train through the project's configs, score every test window (BENCHMARKS.md).

    python bench/etth1.py [--setting univariate|multivariate|both] [--horizons 96 192 336 720]
                          [--input-size 96] [--quick] [--compare neuralforecast] [--data DIR]
                          [--seeds 1 2 3] [--last-checkpoint]

One JSON line per result on stdout: the naive baselines, our model (`experiment=etth1_<setting>`,
one line per seed; with several seeds also their ensemble, the mean of their forecasts) and,
with --compare, neuralforecast's LSTM and the ratio of the two. Every line holds the test
figures (`metrics`: MSE and MAE over every test window) and the validation figures beside them
(`val_mse`, `val_mae`: every window of the protocol's validation part, rows [8640 - L, 11520),
the part our model early-stops on), each model and baseline scored on the same windows; and it
says what it is (`members`: 1 for one model, K for an ensemble).

Each ETTh1 column is one series of a global model (channel independence); the data module's
per-series standard scaler, fitted on the training rows [0, 8640), is exactly the protocol's
standardisation. The model sees rows [0, 11520) only (train + validation: `training_table`);
the validation and test windows are cut by `protocol` and forecast with the saved model's
`Forecaster.predict_scaled`.

`--write-long PATH` writes the standardised long table of rows [0, 14400) for
`pipelines/train.py experiment=etth1_<setting> data.path=PATH`, whose test split is then the
protocol's and whose `test/mae` and `test/rmse` squared are the protocol's MAE and MSE.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from forecast.data.calendar import step_index

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import protocol  # noqa: E402

SETTINGS = {"univariate": (protocol.ETT_TARGET,), "multivariate": protocol.ETT_COLUMNS}
KEYS = ("mse", "mae")
# CI budget: a few hundred steps, one horizon, one seed.
QUICK = ("trainer.max_epochs=2", "trainer.limit_train_batches=25", "++trainer.limit_val_batches=4")


def long_table(values: np.ndarray, dates: pd.Series, columns: tuple[str, ...], end: int) -> pd.DataFrame:
    """Rows [0, end) of standardised (T, C) values as a long table, one series per column."""
    n = end
    return pd.DataFrame(
        {
            "unique_id": np.repeat(np.asarray(columns, dtype=object), n),
            "ds": np.tile(dates.to_numpy()[:n], len(columns)),
            "y": values[:n].T.reshape(-1),
        }
    )


def training_table(values: np.ndarray, dates: pd.Series, columns: tuple[str, ...]) -> pd.DataFrame:
    """What a model trains on: rows [0, 11520) (train + validation), never a test row."""
    return long_table(values, dates, columns, protocol.ETT_VAL_END)


def split_windows(values: np.ndarray, dates: pd.Series, split: str, input_size: int, horizon: int):
    """X (N, L, C), Y (N, H, C) of every window of `split` and each window's first target time."""
    x, y = protocol.etth1_windows(values, split, input_size, horizon)
    first_row = protocol.etth1_bounds(input_size)[split][0] + input_size  # window 0's first target
    return x, y, dates.to_numpy()[first_row : first_row + len(x)]


def calendar_windows(forecaster, first_times: np.ndarray, L: int, C: int) -> dict[str, np.ndarray] | None:
    """The calendar features (`data.calendar`) of every window's L input and H horizon steps,
    encoded as training encoded them: {"futr": (C * N, L + H, F)}, column-major like the windows;
    None for a model without covariates. ETTh1's columns carry no other covariate."""
    enc = forecaster.encoder
    if enc is None:
        return None
    if enc.needs_future or enc.hist_num or enc.hist_cat or enc.static_num or enc.static_cat:
        sys.exit("bench/etth1.py passes calendar features only (data.calendar); no other covariates")
    H = forecaster.settings.horizon
    stamps = (first_times[:, None] + np.arange(-L, H) * np.timedelta64(1, "h")).reshape(-1)  # (N * (L + H),)
    time_col = forecaster.columns.time_col
    futr = enc.encode_rows(pd.DataFrame({time_col: stamps}), time_col, forecaster.settings.freq)["futr"]
    return {"futr": np.tile(futr.reshape(len(first_times), L + H, -1), (C, 1, 1))}


def predict_windows(
    forecaster, x: np.ndarray, columns: tuple[str, ...], first_times: np.ndarray
) -> np.ndarray:
    """(N, L, C) standardised windows -> (N, H, C) forecasts on the same scale.

    `first_times`: (N,) time stamp of each window's first forecast step (a learned cycle's phase).
    """
    n, L, C = x.shape
    ids = np.asarray(columns, dtype=object)
    loc, scale, known = forecaster.scaler.lookup(ids)
    assert known.all(), "every column was a training series"
    flat = np.ascontiguousarray(x.transpose(2, 0, 1)).reshape(C * n, L)  # (C * N, L), column-major
    flat = (flat - np.repeat(loc, n)[:, None]) / np.repeat(scale, n)[:, None]
    step = np.tile(step_index(first_times, forecaster.settings.freq), C)
    series = np.repeat(forecaster.scaler.codes(ids), n)
    covariates = calendar_windows(forecaster, first_times, L, C)
    pred = forecaster.predict_scaled(flat.astype(np.float32), step=step, series=series, covariates=covariates)
    pred = pred[..., 0]  # (C * N, H)
    pred = pred * np.repeat(scale, n)[:, None] + np.repeat(loc, n)[:, None]
    return pred.reshape(C, n, -1).transpose(1, 2, 0)  # (N, H, C)


def line(setting: str, model: str, input_size: int, horizon: int, members: int = 1, **fields) -> dict:
    return {
        "dataset": "etth1",
        "setting": setting,
        "model": model,
        "members": members,
        "input_size": input_size,
        "horizon": horizon,
        **fields,
    }


def scores(pred: np.ndarray, y: np.ndarray, pred_val: np.ndarray | None, y_val: np.ndarray) -> dict:
    """Test `metrics` and `val_*` fields of one forecast of every test and validation window."""
    val = None if pred_val is None else protocol.score_windows(pred_val, y_val)
    return {"metrics": common.rounded(protocol.score_windows(pred, y)), **common.val_fields(val or {})}


def run_ours(args, setting, values, dates, horizon, seeds, base_overrides, tmp: Path):
    """One line per seed (one model each) and, with several seeds, one for their ensemble."""
    columns = SETTINGS[setting]
    path = tmp / f"etth1_{setting}.parquet"
    if not path.exists():
        training_table(values, dates, columns).to_parquet(path, index=False)
    overrides = [
        f"experiment=etth1_{setting}",
        f"data.path={path}",
        f"data.input_size={args.input_size}",
        f"data.horizon={horizon}",
        "data.test_size=0",  # the model never sees the test rows; protocol cuts the windows
        *base_overrides,
    ]
    x, y, times = split_windows(values, dates, "test", args.input_size, horizon)
    x_val, y_val, times_val = split_windows(values, dates, "val", args.input_size, horizon)
    lines, preds, preds_val = [], [], []
    for seed in seeds:
        trained = common.train(overrides, seed, last_checkpoint=args.last_checkpoint)
        with common.timer() as t:
            pred = predict_windows(trained.forecaster, x, columns, times)
        pred_val = predict_windows(trained.forecaster, x_val, columns, times_val)
        preds.append(pred)
        preds_val.append(pred_val)
        lines.append(
            line(
                setting,
                "lstm",
                args.input_size,
                horizon,
                **scores(pred, y, pred_val, y_val),
                train_s=round(trained.seconds, 1),
                predict_s=round(t[0], 2),
                peak_rss_mb=common.peak_rss_mb(),
                seed=seed,
                **common.fit_fields(trained),
                windows=int(len(x)),
                val_windows=int(len(x_val)),
                overrides=list(args.overrides),
            )
        )
    if len(seeds) > 1:
        lines.append(
            line(
                setting,
                common.ensemble_name("lstm", len(seeds)),
                args.input_size,
                horizon,
                members=len(seeds),
                **scores(common.mean_forecast(preds), y, common.mean_forecast(preds_val), y_val),
                train_s=round(sum(r["train_s"] for r in lines), 1),
                predict_s=round(sum(r["predict_s"] for r in lines), 2),
                peak_rss_mb=common.peak_rss_mb(),
                seeds=list(seeds),
                checkpoint=lines[0]["checkpoint"],
                windows=int(len(x)),
                val_windows=int(len(x_val)),
                overrides=list(args.overrides),
            )
        )
    return lines, preds


def run_baselines(setting, values, horizon, input_size) -> list[dict]:
    x, y = protocol.etth1_windows(values, "test", input_size, horizon)
    x_val, y_val = protocol.etth1_windows(values, "val", input_size, horizon)
    out = []
    for name, fn in (
        ("naive", lambda w: protocol.last_value_windows(w, horizon)),
        ("snaive", lambda w: protocol.seasonal_naive_windows(w, horizon, 24)),
    ):
        with common.timer() as t:
            pred = fn(x)
        out.append(
            line(
                setting,
                name,
                input_size,
                horizon,
                **scores(pred, y, fn(x_val), y_val),
                train_s=0.0,
                predict_s=round(t[0], 3),
                peak_rss_mb=common.peak_rss_mb(),
                windows=int(len(x)),
                val_windows=int(len(x_val)),
            )
        )
    return out


def nf_windows(nf, frame: pd.DataFrame, columns, horizon: int) -> np.ndarray:
    """The fitted model's forecasts of every window whose targets are the last 2880 rows of
    `frame` (stride 1, no refit): (N, H, C) in the order of `protocol`'s windows."""
    size = protocol.ETT_TEST_END - protocol.ETT_VAL_END  # 2880, the length of both parts
    cv = nf.cross_validation(frame, test_size=size, n_windows=None, step_size=1, use_fitted=True)
    cv = cv.sort_values(["unique_id", "cutoff", "ds"])  # cutoff = last input time stamp
    return np.stack([cv[cv.unique_id == c]["LSTM"].to_numpy().reshape(-1, horizon) for c in columns], -1)


def run_neuralforecast(setting, values, dates, horizon, input_size, steps, batch_size, seed) -> dict:
    """neuralforecast's LSTM with its own settings, our windows per step and budget (one seed).

    It fits on the same rows [0, 11520) with the same validation part (the last 2880 rows:
    early stopping); then the fitted model forecasts every validation and every test window
    (`cross_validation(use_fitted=True)`: no refit), which are the protocol's windows.
    """
    from neuralforecast import NeuralForecast

    columns = SETTINGS[setting]
    size = protocol.ETT_TEST_END - protocol.ETT_VAL_END
    model = common.neuralforecast_lstm(horizon, input_size, steps, batch_size, seed)
    nf = NeuralForecast(models=[model], freq="h")
    with common.timer() as fit_t:
        nf.fit(training_table(values, dates, columns), val_size=size)
    x, y = protocol.etth1_windows(values, "test", input_size, horizon)
    x_val, y_val = protocol.etth1_windows(values, "val", input_size, horizon)
    with common.timer() as pred_t:
        pred = nf_windows(nf, long_table(values, dates, columns, protocol.ETT_TEST_END), columns, horizon)
    pred_val = nf_windows(nf, training_table(values, dates, columns), columns, horizon)
    if pred.shape != y.shape or pred_val.shape != y_val.shape:
        raise RuntimeError(
            f"neuralforecast returned {pred.shape} and {pred_val.shape}, expected {y.shape} and {y_val.shape}"
        )
    return line(
        setting,
        "neuralforecast-lstm",
        input_size,
        horizon,
        **scores(pred, y, pred_val, y_val),
        train_s=round(fit_t[0], 1),  # the fit alone
        predict_s=round(pred_t[0], 2),  # every test window
        peak_rss_mb=common.peak_rss_mb(),
        seed=seed,
        **common.neuralforecast_settings(steps, batch_size),
        windows=int(len(x)),
        val_windows=int(len(x_val)),
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common.add_common_args(parser)
    parser.add_argument("--setting", choices=["univariate", "multivariate", "both"], default="both")
    parser.add_argument("--horizons", type=int, nargs="+", default=[96, 192, 336, 720])
    parser.add_argument("--input-size", type=int, default=96)
    parser.add_argument("--no-baselines", action="store_true", help="skip the naive lines")
    parser.add_argument("--write-long", type=Path, default=None, help="write the long table and exit")
    args = parser.parse_args(argv)
    common.quiet(args.verbose)
    frame = protocol.load_etth1(common.data_dir(args.data))
    settings = ["univariate", "multivariate"] if args.setting == "both" else [args.setting]

    if args.write_long:
        if len(settings) != 1:
            sys.exit("--write-long needs --setting univariate or multivariate")
        columns = SETTINGS[settings[0]]
        values, _, _ = protocol.etth1_standardized(frame, columns)
        long_table(values, frame["date"], columns, protocol.ETT_TEST_END).to_parquet(args.write_long)
        print(f"wrote {args.write_long}: rows [0, {protocol.ETT_TEST_END}) of {columns}, standardised")
        return

    if args.compare:
        common.require_neuralforecast()
    horizons = args.horizons[:1] if args.quick else args.horizons
    seeds = common.seeds_of(args)
    base = [*(QUICK if args.quick else ()), *args.overrides]
    with tempfile.TemporaryDirectory(prefix="etth1-") as tmp:
        for setting in settings:
            values, _, _ = protocol.etth1_standardized(frame, SETTINGS[setting])
            for horizon in horizons:
                if not args.no_baselines:
                    for record in run_baselines(setting, values, horizon, args.input_size):
                        common.emit(record)
                lines, _ = run_ours(args, setting, values, frame["date"], horizon, seeds, base, Path(tmp))
                for record in lines:
                    common.emit(record)
                if args.compare:
                    cfg = common.compose([f"experiment=etth1_{setting}", *base], Path(tmp))
                    theirs = run_neuralforecast(
                        setting, values, frame["date"], horizon, args.input_size, common.budget(cfg),
                        int(cfg.data.batch_size), seeds[0],
                    )  # fmt: skip
                    common.emit(theirs)
                    ours = lines[0]  # a single model, the same seed as theirs
                    common.emit(
                        line(
                            setting,
                            "ratio ours/neuralforecast-lstm",
                            args.input_size,
                            horizon,
                            seed=ours["seed"],
                            checkpoint=ours["checkpoint"],
                            **common.ratios(ours, theirs, KEYS),
                            # fit over fit (each side's training alone, forecasts not included)
                            **common.time_ratios(ours, theirs),
                        )
                    )


if __name__ == "__main__":
    main()
