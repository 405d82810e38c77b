"""B2, ETTh1: train through the project's configs, score every test window (BENCHMARKS.md).

    python bench/etth1.py [--setting univariate|multivariate|both] [--horizons 96 192 336 720]
                          [--input-size 96] [--quick] [--compare neuralforecast] [--data DIR]

One JSON line per result on stdout: our model (`experiment=etth1_<setting>`, the mean of a
few seeds), the naive baselines on the same windows and, with --compare, neuralforecast's
LSTM and the ratio of the two. Each ETTh1 column is one series of a global model (channel
independence); the data module's per-series standard scaler, fitted on the training rows
[0, 8640), is exactly the protocol's standardisation. The model sees rows [0, 11520) only
(train + validation); the test windows are cut by `protocol` and forecast with the saved
model's `Forecaster.predict_scaled`.

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
DEFAULT_SEEDS = (1, 2, 3)
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
    pred = forecaster.predict_scaled(flat.astype(np.float32), step=step, series=series)[..., 0]  # (C * N, H)
    pred = pred * np.repeat(scale, n)[:, None] + np.repeat(loc, n)[:, None]
    return pred.reshape(C, n, -1).transpose(1, 2, 0)  # (N, H, C)


def run_ours(
    args, setting, values, dates, horizon, seeds, base_overrides, tmp: Path
) -> tuple[dict, np.ndarray]:
    """Train one model per seed, average their forecasts on every test window."""
    columns = SETTINGS[setting]
    path = tmp / f"etth1_{setting}.parquet"
    if not path.exists():
        long_table(values, dates, columns, protocol.ETT_VAL_END).to_parquet(path, index=False)
    overrides = [
        f"experiment=etth1_{setting}",
        f"data.path={path}",
        f"data.input_size={args.input_size}",
        f"data.horizon={horizon}",
        "data.test_size=0",  # the model never sees the test rows; protocol cuts the windows
        *base_overrides,
    ]
    x, y = protocol.etth1_windows(values, "test", args.input_size, horizon)
    first_row = protocol.etth1_bounds(args.input_size)["test"][0] + args.input_size  # window 0's
    first_times = dates.to_numpy()[first_row : first_row + len(x)]
    preds, train_s, predict_s, epochs = [], 0.0, 0.0, []
    for seed in seeds:
        trained = common.train(overrides, seed)
        train_s += trained.seconds
        epochs.append(trained.epochs)
        with common.timer() as t:
            preds.append(predict_windows(trained.forecaster, x, columns, first_times))
        predict_s += t[0]
    pred = common.mean_forecast(preds)
    record = {
        "dataset": "etth1",
        "setting": setting,
        "model": f"lstm x{len(seeds)}" if len(seeds) > 1 else "lstm",
        "input_size": args.input_size,
        "horizon": horizon,
        "metrics": common.rounded(protocol.score_windows(pred, y)),
        "train_s": round(train_s, 1),
        "predict_s": round(predict_s, 2),
        "peak_rss_mb": common.peak_rss_mb(),
        "seeds": list(seeds),
        "epochs": epochs,
        "windows": int(len(x)),
        "overrides": list(args.overrides),
    }
    if len(seeds) > 1:
        record["members"] = [common.rounded(protocol.score_windows(p, y)) for p in preds]
    return record, pred


def run_baselines(setting, values, horizon, input_size) -> list[dict]:
    x, y = protocol.etth1_windows(values, "test", input_size, horizon)
    out = []
    for name, fn in (
        ("naive", lambda: protocol.last_value_windows(x, horizon)),
        ("snaive", lambda: protocol.seasonal_naive_windows(x, horizon, 24)),
    ):
        with common.timer() as t:
            pred = fn()
        out.append(
            {
                "dataset": "etth1",
                "setting": setting,
                "model": name,
                "input_size": input_size,
                "horizon": horizon,
                "metrics": common.rounded(protocol.score_windows(pred, y)),
                "train_s": 0.0,
                "predict_s": round(t[0], 3),
                "peak_rss_mb": common.peak_rss_mb(),
                "windows": int(len(x)),
            }
        )
    return out


def run_neuralforecast(setting, values, dates, horizon, input_size, steps, loss, scaler) -> dict:
    """neuralforecast's LSTM (2 x 128) on the same rows, windows and budget (one seed)."""
    from neuralforecast import NeuralForecast

    columns = SETTINGS[setting]
    frame = long_table(values, dates, columns, protocol.ETT_TEST_END)
    model = common.neuralforecast_lstm(horizon, input_size, steps, loss, scaler)
    nf = NeuralForecast(models=[model], freq="h")
    size = protocol.ETT_TEST_END - protocol.ETT_VAL_END
    with common.timer() as t:
        cv = nf.cross_validation(frame, val_size=size, test_size=size, n_windows=None, step_size=1)
    # cutoff = last input timestamp; step = position after it.
    cv = cv.sort_values(["unique_id", "cutoff", "ds"])
    n = size - horizon + 1
    pred = np.stack([cv[cv.unique_id == c]["LSTM"].to_numpy().reshape(-1, horizon) for c in columns], -1)
    x, y = protocol.etth1_windows(values, "test", input_size, horizon)
    if pred.shape != y.shape:
        raise RuntimeError(f"neuralforecast returned {pred.shape}, expected {y.shape} ({n} windows)")
    return {
        "dataset": "etth1",
        "setting": setting,
        "model": "neuralforecast-lstm",
        "input_size": input_size,
        "horizon": horizon,
        "metrics": common.rounded(protocol.score_windows(pred, y)),
        "train_s": round(t[0], 1),  # fit and forecast of every window together
        "predict_s": None,
        "peak_rss_mb": common.peak_rss_mb(),
        "steps": steps,
        "windows": int(len(x)),
    }


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
    seeds = args.seeds or (DEFAULT_SEEDS[:1] if args.quick else DEFAULT_SEEDS)
    base = [*(QUICK if args.quick else ()), *args.overrides]
    with tempfile.TemporaryDirectory(prefix="etth1-") as tmp:
        for setting in settings:
            values, _, _ = protocol.etth1_standardized(frame, SETTINGS[setting])
            for horizon in horizons:
                if not args.no_baselines:
                    for record in run_baselines(setting, values, horizon, args.input_size):
                        common.emit(record)
                ours, _ = run_ours(args, setting, values, frame["date"], horizon, seeds, base, Path(tmp))
                common.emit(ours)
                if args.compare:
                    cfg = common.compose([f"experiment=etth1_{setting}", *base], Path(tmp))
                    steps = int(cfg.trainer.max_epochs) * int(cfg.trainer.limit_train_batches)
                    theirs = run_neuralforecast(
                        setting, values, frame["date"], horizon, args.input_size, steps,
                        cfg.model.loss, cfg.data.scaler,
                    )  # fmt: skip
                    common.emit(theirs)
                    common.emit(
                        {
                            "dataset": "etth1",
                            "setting": setting,
                            "model": "ratio ours/neuralforecast-lstm",
                            "input_size": args.input_size,
                            "horizon": horizon,
                            "metrics": {
                                k: round(ours["metrics"][k] / theirs["metrics"][k], 3) for k in ("mse", "mae")
                            },
                            "train_s": round(ours["train_s"] / max(theirs["train_s"], 1e-9), 3),
                        }
                    )


if __name__ == "__main__":
    main()
