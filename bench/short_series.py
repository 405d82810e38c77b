"""Short series: M4 Hourly with a third of the series cut short, one model, padded vs untouched.

    python bench/short_series.py [--quick] [--data DIR] [--keep 100] [--seeds 1] [--set K=V ...]

Every third series of M4 Hourly (H1, H4, ...) keeps only the last `--keep` values of its
training part (100: shorter than input_size + horizon = 216 of `experiment=m4_hourly`), the
others stay whole. One model (`experiment=m4_hourly`, a reduced step budget) trains on those
training parts, where a cut series has training windows only with a padded input; its last 48
values validate, as in `m4_hourly.py`. The saved model's `Forecaster.predict` then forecasts
the validation part from what precedes it and the M4 test part from the whole training part:
a cut series from a padded window (52 and 100 of 168 steps observed), once with the network
alone (`lstm`) and once with the short-history blend fitted on the validation windows at
packaging time (`lstm+blend`, `forecast.short_history`; a full window is the same forecast).
Seasonal naive (m = 24) forecasts the same series from the same history.

Prints one JSON line per (group, split, model) and a table: sMAPE and MASE of the padded (cut)
and the untouched series. MASE divides by the in-sample seasonal error of the series' whole M4
training part, as the M4 protocol does, for both splits and groups: 52 cut values can hold no
seasonal change at all (a flat stretch), which made the scale 0 and MASE infinite.
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

from forecast.baselines import forecast_many, seasonal_naive  # noqa: E402

H, M = protocol.M4_HORIZON, protocol.M4_SEASON
# A few minutes on 2 cores: a third of the experiment's 30 epochs of 100 batches.
BUDGET = ("trainer.max_epochs=10",)
QUICK = ("trainer.max_epochs=2", "trainer.limit_train_batches=25")


def cut_short(train: list[np.ndarray], keep: int, every: int = 3) -> tuple[list[np.ndarray], np.ndarray]:
    """Every `every`-th series keeps only its last `keep` training values; (series, which were cut)."""
    cut = np.arange(len(train)) % every == 0
    return [s[-keep:] if c else s for s, c in zip(train, cut, strict=True)], cut


def scores(actual: np.ndarray, forecast: np.ndarray, scale_from: list[np.ndarray]) -> dict[str, float]:
    """sMAPE and MASE (seasonal scale from `scale_from`, each series' M4 training part), averaged."""
    return {
        "smape": float(protocol.smape_per_series(actual, forecast).mean()),
        "mase": float(protocol.mase_per_series(actual, forecast, scale_from, M).mean()),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common.add_common_args(parser)
    parser.add_argument("--keep", type=int, default=100, help="training values a cut series keeps")
    args = parser.parse_args(argv)
    common.quiet(args.verbose)
    if args.keep < H + 1 + H:
        sys.exit(f"--keep {args.keep}: a cut series needs horizon + 1 + validation = {2 * H + 1} values")
    full_train, test, ids = protocol.load_m4_hourly(common.data_dir(args.data))
    train, cut = cut_short(full_train, args.keep)
    seed = (args.seeds or [1])[0]
    before_val = [s[:-H] for s in train]  # what a forecast of the validation part sees
    val = np.stack([s[-H:] for s in train])

    with tempfile.TemporaryDirectory(prefix="short-") as tmp:
        path = Path(tmp) / "m4_hourly_short.parquet"
        protocol.m4_to_long(train, ids).to_parquet(path, index=False)
        overrides = [
            "experiment=m4_hourly",
            f"data.path={path}",
            "data.test_size=0",  # the file holds the training parts only
            *(QUICK if args.quick else BUDGET),
            *args.overrides,
        ]
        trained = common.train(overrides, seed)
    f = trained.forecaster
    blend = f.short_history
    forecasts = {}
    with common.timer() as t:
        for split, history in (("val", before_val), ("test", train)):
            frame = f.predict(protocol.m4_to_long(history, ids))
            forecasts[split, "lstm+blend"] = protocol.long_to_array(frame, ids, "y_hat")
    predict_s = t[0]
    f.short_history = None  # the network alone, the same weights
    for split, history in (("val", before_val), ("test", train)):
        frame = f.predict(protocol.m4_to_long(history, ids))
        forecasts[split, "lstm"] = protocol.long_to_array(frame, ids, "y_hat")
    f.short_history = blend
    for split, history in (("val", before_val), ("test", train)):
        forecasts[split, "snaive"] = forecast_many(seasonal_naive, history, H, season_length=M)

    rows = []
    truth = {"val": (val, before_val), "test": (test, train)}
    for group, members in (("padded", cut), ("untouched", ~cut)):
        pick = np.flatnonzero(members)
        for split, (actual, history) in truth.items():
            for model in ("lstm", "lstm+blend", "snaive"):
                metrics = scores(actual[pick], forecasts[split, model][pick], [full_train[i] for i in pick])
                line = {
                    "dataset": "m4_hourly_short",
                    "group": group,
                    "series": len(pick),
                    "split": split,
                    "model": model,
                    "input_size": f.settings.input_size if model != "snaive" else None,
                    "horizon": H,
                    "observed": int(np.median([len(history[i]) for i in pick])),
                    "metrics": common.rounded(metrics),
                    "train_s": round(trained.seconds, 1) if model != "snaive" else 0.0,
                    "predict_s": round(predict_s, 3) if model == "lstm+blend" else 0.0,
                    "peak_rss_mb": common.peak_rss_mb(),
                    "seed": seed,
                    "epochs": trained.epochs,
                    "keep": args.keep,
                    "overrides": list(args.overrides),
                }
                if model == "lstm+blend":
                    line["short_history"] = None if blend is None else blend.to_dict()
                common.emit(line)
                rows.append(line)
    print_table(rows, sys.stderr)


def print_table(rows: list[dict], out) -> None:
    """The figures as a Markdown table (on stderr: stdout is for the JSON lines)."""
    print("\n| series | split | history (median) | model | sMAPE | MASE |", file=out)
    print("| --- | --- | --- | --- | --- | --- |", file=out)
    for r in rows:
        name = {"lstm": "ours", "lstm+blend": "ours + blend", "snaive": "seasonal naive"}[r["model"]]
        m = r["metrics"]
        group = f"{r['group']} ({r['series']})"
        print(
            f"| {group} | {r['split']} | {r['observed']} | {name} | {m['smape']:.3f} | {m['mase']:.3f} |",
            file=out,
        )


if __name__ == "__main__":
    main()
