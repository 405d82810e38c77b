"""B1, M4 Hourly: one global model over the 414 series, scored on the 48 test values.

    python bench/m4_hourly.py [--quick] [--compare neuralforecast] [--data DIR] [--seeds 1 2 3]

One JSON line per result on stdout: our model (`experiment=m4_hourly`, the mean of a few
seeds), naive, seasonal naive and Naive2 and, with --compare, neuralforecast's LSTM with the
ratio of the two. The model trains on the training part only (the last 48 values of each
series validate, for early stopping and the best checkpoint); the forecast is the saved
model's `Forecaster.predict` on the whole training part, the deployed path.

`--write-long PATH` writes training and test parts joined as one long table for
`pipelines/train.py experiment=m4_hourly data.path=PATH`: its test split is then the M4 test
and it trains exactly the model this script trains.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import protocol  # noqa: E402

from forecast.baselines import forecast_many, naive, naive2, seasonal_naive  # noqa: E402

H = protocol.M4_HORIZON
DEFAULT_SEEDS = (1, 2, 3)
QUICK = ("trainer.max_epochs=2", "trainer.limit_train_batches=25")


def record(model: str, input_size: int | None, metrics: dict, train_s: float, predict_s: float, **extra):
    return {
        "dataset": "m4_hourly",
        "model": model,
        "input_size": input_size,
        "horizon": H,
        "metrics": common.rounded(metrics),
        "train_s": round(train_s, 1),
        "predict_s": round(predict_s, 3),
        "peak_rss_mb": common.peak_rss_mb(),
        **extra,
    }


def run_baselines(train, test) -> list[dict]:
    out = []
    for name, method, kwargs in (
        ("naive", naive, {}),
        ("snaive", seasonal_naive, {"season_length": protocol.M4_SEASON}),
        ("naive2", naive2, {"season_length": protocol.M4_SEASON}),
    ):
        with common.timer() as t:
            pred = forecast_many(method, train, H, **kwargs)
        out.append(record(name, None, protocol.score_m4(pred, train, test), 0.0, t[0]))
    return out


def run_ours(args, train, test, ids, seeds, base_overrides, tmp: Path) -> tuple[dict, np.ndarray, object]:
    history = protocol.m4_to_long(train, ids)
    path = tmp / "m4_hourly_train.parquet"
    history.to_parquet(path, index=False)
    overrides = [
        "experiment=m4_hourly",
        f"data.path={path}",
        "data.test_size=0",  # the file holds the training part only
        *base_overrides,
    ]
    preds, train_s, predict_s, epochs, input_size = [], 0.0, 0.0, [], None
    for seed in seeds:
        trained = common.train(overrides, seed)
        train_s += trained.seconds
        epochs.append(trained.epochs)
        input_size = trained.forecaster.settings.input_size
        with common.timer() as t:
            forecast = trained.forecaster.predict(history)
        predict_s += t[0]
        preds.append(protocol.long_to_array(forecast, ids, "y_hat"))
    pred = common.mean_forecast(preds)
    extra = {"seeds": list(seeds), "epochs": epochs, "overrides": list(args.overrides)}
    if len(seeds) > 1:
        extra["members"] = [common.rounded(protocol.score_m4(p, train, test)) for p in preds]
    name = f"lstm x{len(seeds)}" if len(seeds) > 1 else "lstm"
    return record(name, input_size, protocol.score_m4(pred, train, test), train_s, predict_s, **extra), pred


def run_neuralforecast(train, test, ids, input_size, steps, loss, scaler, batch_size) -> dict:
    """neuralforecast's LSTM (2 x 128) with our input size, loss, scaler and step budget."""
    from neuralforecast import NeuralForecast

    history = protocol.m4_to_long(train, ids)
    model = common.neuralforecast_lstm(H, input_size, steps, loss, scaler, windows_batch_size=batch_size)
    nf = NeuralForecast(models=[model], freq="h")
    with common.timer() as fit_t:
        nf.fit(history, val_size=H)
    with common.timer() as pred_t:
        forecast = nf.predict()
    pred = protocol.long_to_array(forecast, ids, "LSTM")
    return record(
        "neuralforecast-lstm",
        input_size,
        protocol.score_m4(pred, train, test),
        fit_t[0],
        pred_t[0],
        steps=steps,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common.add_common_args(parser)
    parser.add_argument("--no-baselines", action="store_true", help="skip the naive lines")
    parser.add_argument("--write-long", type=Path, default=None, help="write the long table and exit")
    parser.add_argument("--save-forecasts", type=Path, default=None, help="save our forecasts (.npy)")
    args = parser.parse_args(argv)
    common.quiet(args.verbose)
    train, test, ids = protocol.load_m4_hourly(common.data_dir(args.data))

    if args.write_long:
        joined = [np.concatenate([a, b]) for a, b in zip(train, test, strict=True)]
        protocol.m4_to_long(joined, ids).to_parquet(args.write_long, index=False)
        print(f"wrote {args.write_long}: {len(ids)} series, training and test parts joined")
        return

    if args.compare:
        common.require_neuralforecast()
    seeds = args.seeds or (DEFAULT_SEEDS[:1] if args.quick else DEFAULT_SEEDS)
    base = [*(QUICK if args.quick else ()), *args.overrides]
    if not args.no_baselines:
        for line in run_baselines(train, test):
            common.emit(line)
    with tempfile.TemporaryDirectory(prefix="m4-") as tmp:
        ours, pred = run_ours(args, train, test, ids, seeds, base, Path(tmp))
        common.emit(ours)
        if args.save_forecasts:
            np.save(args.save_forecasts, pred)
        if args.compare:
            cfg = common.compose(["experiment=m4_hourly", *base], Path(tmp))
            steps = int(cfg.trainer.max_epochs) * int(cfg.trainer.limit_train_batches)
            theirs = run_neuralforecast(
                train, test, ids, int(cfg.data.input_size), steps, cfg.model.loss, cfg.data.scaler,
                int(cfg.data.batch_size),
            )  # fmt: skip
            common.emit(theirs)
            ratios = {
                k: round(ours["metrics"][k] / theirs["metrics"][k], 3) for k in ("smape", "mase", "owa")
            }
            common.emit(
                {
                    "dataset": "m4_hourly",
                    "model": "ratio ours/neuralforecast-lstm",
                    "input_size": ours["input_size"],
                    "horizon": H,
                    "metrics": ratios,
                    "train_s": round(ours["train_s"] / max(theirs["train_s"], 1e-9), 3),
                }
            )


if __name__ == "__main__":
    main()
