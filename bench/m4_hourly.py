"""B1, M4 Hourly: one global model over the 414 series, scored on the 48 test values.

    python bench/m4_hourly.py [--quick] [--compare neuralforecast] [--data DIR] [--seeds 1 2 3]
                              [--last-checkpoint]

One JSON line per result on stdout: naive, seasonal naive and Naive2, our model
(`experiment=m4_hourly`, one line per seed; with several seeds also their ensemble, the mean of
their forecasts) and, with --compare, neuralforecast's LSTM and the ratio of the two. Every line
holds the test figures (`metrics`) and the validation figures beside them (`val_smape`,
`val_mase`, `val_owa`), and says what it is (`members`: 1 for one model, K for an ensemble).

Validation is what the model early-stops on: the last 48 values of each series' training part
(`protocol.m4_validation`), forecast from the values before them; the baselines and
neuralforecast are scored on the same windows. There, MASE scales by the in-sample seasonal
error of the values before the window and OWA is relative to Naive2 on those windows (the
script computes it), as the test OWA is relative to Naive2 on the test windows.

The model trains on the training part only (no test value reaches it: `training_table`); the
test forecast is the saved model's `Forecaster.predict` on the whole training part, the
deployed path.

`--write-long PATH` writes training and test parts joined as one long table for
`pipelines/train.py experiment=m4_hourly data.path=PATH`: its test split is then the M4 test
and it trains exactly the model this script trains.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import protocol  # noqa: E402

from forecast.baselines import forecast_many, naive, naive2, seasonal_naive  # noqa: E402

H = protocol.M4_HORIZON
QUICK = ("trainer.max_epochs=2", "trainer.limit_train_batches=25")
KEYS = ("smape", "mase", "owa")


@dataclass
class Windows:
    """Test and validation windows of B1 and how to score a forecast of each."""

    train: list[np.ndarray]  # training parts: the test forecasts' history
    test: np.ndarray  # (n, 48) test values
    val_history: list[np.ndarray]  # training parts less their last 48 values
    val_target: np.ndarray  # (n, 48) those last 48 values
    val_reference: tuple[float, float]  # Naive2's (sMAPE, MASE) on the validation windows

    @classmethod
    def build(cls, train: list[np.ndarray], test: np.ndarray) -> Windows:
        val_history, val_target = protocol.m4_validation(train)
        n2 = protocol.score_m4(
            forecast_many(naive2, val_history, H, season_length=protocol.M4_SEASON), val_history, val_target
        )
        return cls(train, test, val_history, val_target, (n2["smape"], n2["mase"]))

    def score(self, pred_test: np.ndarray) -> dict[str, float]:
        return protocol.score_m4(pred_test, self.train, self.test)

    def score_val(self, pred_val: np.ndarray) -> dict[str, float]:
        return protocol.score_m4(pred_val, self.val_history, self.val_target, reference=self.val_reference)


def training_table(train: list[np.ndarray], ids: list[str]) -> pd.DataFrame:
    """The long table our model trains on: every series' training part, nothing of the test."""
    return protocol.m4_to_long(train, ids)


def record(
    model: str,
    input_size: int | None,
    metrics: dict,
    val: dict | None,
    train_s: float,
    predict_s: float,
    members: int = 1,
    **extra,
):
    return {
        "dataset": "m4_hourly",
        "model": model,
        "members": members,
        "input_size": input_size,
        "horizon": H,
        "metrics": common.rounded(metrics),
        **common.val_fields(val),
        "train_s": round(train_s, 1),
        "predict_s": round(predict_s, 3),
        "peak_rss_mb": common.peak_rss_mb(),
        **extra,
    }


def run_baselines(windows: Windows) -> list[dict]:
    out = []
    for name, method, kwargs in (
        ("naive", naive, {}),
        ("snaive", seasonal_naive, {"season_length": protocol.M4_SEASON}),
        ("naive2", naive2, {"season_length": protocol.M4_SEASON}),
    ):
        with common.timer() as t:
            pred = forecast_many(method, windows.train, H, **kwargs)
        pred_val = forecast_many(method, windows.val_history, H, **kwargs)
        out.append(record(name, None, windows.score(pred), windows.score_val(pred_val), 0.0, t[0]))
    return out


def run_ours(args, windows: Windows, ids, seeds, base_overrides, tmp: Path) -> tuple[list[dict], list]:
    """One line per seed (one model each) and, with several seeds, one for their ensemble."""
    history = training_table(windows.train, ids)
    val_history = protocol.m4_to_long(windows.val_history, ids)
    path = tmp / "m4_hourly_train.parquet"
    history.to_parquet(path, index=False)
    overrides = [
        "experiment=m4_hourly",
        f"data.path={path}",
        "data.test_size=0",  # the file holds the training part only
        *base_overrides,
    ]
    lines, preds, preds_val = [], [], []
    for seed in seeds:
        trained = common.train(overrides, seed, last_checkpoint=args.last_checkpoint)
        with common.timer() as t:
            forecast = trained.forecaster.predict(history)
        pred = protocol.long_to_array(forecast, ids, "y_hat")
        pred_val = protocol.long_to_array(trained.forecaster.predict(val_history), ids, "y_hat")
        preds.append(pred)
        preds_val.append(pred_val)
        lines.append(
            record(
                "lstm",
                trained.forecaster.settings.input_size,
                windows.score(pred),
                windows.score_val(pred_val),
                trained.seconds,
                t[0],
                seed=seed,
                **common.fit_fields(trained),
                overrides=list(args.overrides),
            )
        )
    singles = list(lines)
    for combine, how in (("mean", common.mean_forecast), ("median", common.median_forecast)):
        if len(seeds) < 2:
            break
        name = common.ensemble_name("lstm", len(seeds))
        lines.append(
            record(
                name if combine == "mean" else f"{name} (median)",
                singles[0]["input_size"],
                windows.score(how(preds)),
                windows.score_val(how(preds_val)),
                sum(line["train_s"] for line in singles),
                sum(line["predict_s"] for line in singles),
                members=len(seeds),
                combine=combine,
                seeds=list(seeds),
                checkpoint=singles[0]["checkpoint"],
                overrides=list(args.overrides),
            )
        )
    return lines, preds


def run_neuralforecast(windows: Windows, ids, input_size: int, steps: dict, batch_size: int, seed: int):
    """neuralforecast's LSTM with its own settings, our windows per step and budget (one seed).

    It fits on the same training parts with the same last 48 values as validation (early
    stopping); it forecasts the test from the whole training part and the validation windows
    from the training parts less their last 48 values, with the fitted model (no refit).
    """
    from neuralforecast import NeuralForecast

    history = training_table(windows.train, ids)
    model = common.neuralforecast_lstm(H, input_size, steps, batch_size, seed)
    nf = NeuralForecast(models=[model], freq="h")
    with common.timer() as fit_t:
        nf.fit(history, val_size=H)
    with common.timer() as pred_t:
        forecast = nf.predict()
    pred = protocol.long_to_array(forecast, ids, "LSTM")
    forecast_val = nf.predict(df=protocol.m4_to_long(windows.val_history, ids))
    pred_val = protocol.long_to_array(forecast_val, ids, "LSTM")
    return record(
        "neuralforecast-lstm",
        input_size,
        windows.score(pred),
        windows.score_val(pred_val),
        fit_t[0],
        pred_t[0],
        seed=seed,
        **common.neuralforecast_settings(steps, batch_size),
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common.add_common_args(parser)
    parser.add_argument("--no-baselines", action="store_true", help="skip the naive lines")
    parser.add_argument("--write-long", type=Path, default=None, help="write the long table and exit")
    parser.add_argument(
        "--save-forecasts", type=Path, default=None, help="our test forecasts (.npy: seeds x series x 48)"
    )
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
    seeds = common.seeds_of(args)
    base = [*(QUICK if args.quick else ()), *args.overrides]
    windows = Windows.build(train, test)
    if not args.no_baselines:
        for line in run_baselines(windows):
            common.emit(line)
    with tempfile.TemporaryDirectory(prefix="m4-") as tmp:
        lines, preds = run_ours(args, windows, ids, seeds, base, Path(tmp))
        for line in lines:
            common.emit(line)
        if args.save_forecasts:
            np.save(args.save_forecasts, np.stack(preds))
        if args.compare:
            cfg = common.compose(["experiment=m4_hourly", *base], Path(tmp))
            steps = common.budget(cfg)
            theirs = run_neuralforecast(
                windows, ids, int(cfg.data.input_size), steps, int(cfg.data.batch_size), seeds[0]
            )
            common.emit(theirs)
            ours = lines[0]  # a single model, the same seed as theirs
            common.emit(
                {
                    "dataset": "m4_hourly",
                    "model": "ratio ours/neuralforecast-lstm",
                    "members": 1,
                    "seed": ours["seed"],
                    "checkpoint": ours["checkpoint"],
                    "input_size": ours["input_size"],
                    "horizon": H,
                    **common.ratios(ours, theirs, KEYS),
                    # fit over fit (each side's training alone, forecasts not included)
                    **common.time_ratios(ours, theirs),
                }
            )


if __name__ == "__main__":
    main()
