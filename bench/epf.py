"""B4, EPF: day-ahead electricity prices with future-known covariates (BENCHMARKS.md).

    python bench/epf.py [--markets NP PJM BE] [--variants none futr futr+calendar]
                        [--input-size 168] [--quick] [--compare neuralforecast] [--data DIR]
                        [--seeds 1 2 3] [--last-checkpoint] [--set KEY=VALUE ...]

Per market, one model trained once on everything before the 728 test days (no refit during the
test period), its last 364 days validating (early stopping, the best checkpoint, and every
choice between settings). The forecast is the protocol's: for every day d, its 24 prices from
the prices up to the end of d - 1 and the two day-ahead covariates up to the end of d (the model
reads them as `data.futr_exog`, over its input window and the horizon); only origins at midnight
are scored, validation days and test days alike.

One JSON line per result on stdout: the daily and weekly naive baselines, our model
(`experiment=epf`) in each variant (`none`: the prices alone; `futr`: with the two covariates;
`futr+calendar`: also hour and day of week from the time stamps), one line per seed (`members:
1`) and with several seeds their ensemble (`members: K`, the mean and the median of the seeds'
forecasts: `combine`); a `choice` line naming the variant with the lowest validation MAE (the
one the experiment adopts) and how much the covariates lowered validation MAE; with --compare,
neuralforecast's LSTM with the same covariates (`futr_exog_list`) and the ratio of the two.
Every line holds the test figures (`metrics`: MAE, RMSE, sMAPE, rMAE over all test hours) and
the validation figures beside them (`val_mae`, `val_rmse`, `val_smape`, `val_rmae`: all hours of
the 364 validation days).

neuralforecast runs in a child process under $NEURALFORECAST_PYTHON, else this interpreter when
it imports neuralforecast, else /tmp/nfvenv/bin/python (as bench/throughput.py does).

`--write-long PATH` (one market) writes the whole long table (prices and covariates) for
`pipelines/train.py experiment=epf data.path=PATH`, whose test split is then the 728 test days;
`--write-sample PATH` writes the embedded `epf_np_sample` data set (NP's last 364 days).
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import protocol  # noqa: E402
from throughput import neuralforecast_python  # noqa: E402  (stdlib imports only at its top)

KEYS = ("mae", "rmse", "smape", "rmae")
CALENDAR = ("hour", "dayofweek")
VARIANTS = ("none", "futr", "futr+calendar")
H = protocol.EPF_DAY
# CI budget: a few dozen steps, one market, one seed.
QUICK = ("trainer.max_epochs=2", "trainer.limit_train_batches=10", "++trainer.limit_val_batches=2")
SAMPLE_DAYS = 364  # the embedded epf_np_sample: NP's last 364 days


# -- the model's inputs per forecast day --------------------------------------------------------
def variant_overrides(variant: str, market: str, data_keys: set[str]) -> list[str]:
    """Hydra overrides of one variant. Keys the config lacks are added (`++`), so the prices-only
    line also runs with a data module that predates covariates; keys it has are emptied (the
    typed data config refuses a deletion)."""
    futr = list(protocol.EPF_COVARIATES[market]) if variant != "none" else []
    calendar = list(CALENDAR) if variant == "futr+calendar" else []
    out = []
    for key, value in (("futr_exog", futr), ("calendar", calendar)):
        if value:
            out.append(f"++data.{key}=[{','.join(value)}]")
        elif key in data_keys:
            out.append(f"data.{key}=[]")
    return out


def covariate_encoder(forecaster):
    """The model's fitted covariate encoder, or None (a model of the prices alone)."""
    stored = getattr(forecaster.settings, "covariates", None)
    if not stored:
        return None
    from forecast.data.covariate_encoder import CovariateEncoder

    return CovariateEncoder.from_dict(stored)


def day_inputs(
    forecaster, frame: pd.DataFrame, origins: np.ndarray, input_size: int
) -> dict[str, np.ndarray]:
    """The batch of every forecast day starting at row `origins` (midnights), scaled as in training.

    x (N, L): the prices of rows [o - L, o), up to the end of day d - 1; futr (N, L + H, F): the
    encoded covariates (and calendar) of rows [o - L, o + H), up to the end of day d. The prices
    of day d never enter.
    """
    from forecast.data.calendar import step_index

    market = frame["unique_id"].iloc[0]
    ids = np.asarray([market], dtype=object)
    loc, scale, known = forecaster.scaler.lookup(ids)
    assert known.all(), "the market was the training series"
    y = frame["y"].to_numpy(dtype=np.float64)
    window = origins[:, None] - input_size + np.arange(input_size)  # (N, L)
    batch: dict[str, np.ndarray] = {"x": ((y[window] - loc[0]) / scale[0]).astype(np.float32)}
    if forecaster.settings.net_params.get("cycle_len"):
        batch["step"] = step_index(frame["ds"].to_numpy()[origins], forecaster.settings.freq)
        batch["series"] = np.repeat(forecaster.scaler.codes(ids), len(origins))
    encoder = covariate_encoder(forecaster)
    if encoder is not None:
        rows = encoder.encode_rows(frame, "ds", forecaster.settings.freq)  # key -> (T, width)
        span = origins[:, None] - input_size + np.arange(input_size + H)  # (N, L + H)
        for key, values in rows.items():
            batch[key] = values[span if key.startswith("futr") else window]
    return batch


def predict_days(forecaster, frame: pd.DataFrame, origins: np.ndarray, input_size: int) -> np.ndarray:
    """(N, 24) price forecasts of the days starting at `origins`, on the price scale.

    Through `Forecaster.predict_scaled`, the deployed network path; covariate arrays go in as its
    keyword arguments when it takes them, else (an older forecaster) the net reads the batch dict.
    """
    batch = day_inputs(forecaster, frame, origins, input_size)
    covariates = {k: v for k, v in batch.items() if k not in ("x", "step", "series")}
    params = inspect.signature(forecaster.predict_scaled).parameters
    if not covariates or "covariates" in params or all(k in params for k in covariates):
        extra = {"covariates": covariates} if covariates and "covariates" in params else covariates
        pred = forecaster.predict_scaled(
            batch["x"], step=batch.get("step"), series=batch.get("series"), **extra
        )
    else:
        pred = _net_direct(forecaster, batch)
    loc, scale, _ = forecaster.scaler.lookup(np.asarray([frame["unique_id"].iloc[0]], dtype=object))
    return pred[..., forecaster.settings.point_index] * scale[0] + loc[0]  # (N, H)


def _net_direct(forecaster, batch: dict[str, np.ndarray], batch_size: int = 1024) -> np.ndarray:
    """The net called with the batch dict (the contract's `forward(batch)`): (N, H, Q)."""
    import torch

    out = []
    with torch.no_grad():
        for i in range(0, len(batch["x"]), batch_size):
            part = {
                k: torch.from_numpy(np.ascontiguousarray(v[i : i + batch_size])) for k, v in batch.items()
            }
            part["x_mask"] = torch.ones_like(part["x"], dtype=torch.bool)
            out.append(forecaster.net(part).numpy())
    return np.concatenate(out)


# -- lines ---------------------------------------------------------------------------------------
def line(market: str, model: str, input_size: int, members: int = 1, **fields) -> dict:
    return {
        "dataset": "epf",
        "market": market,
        "model": model,
        "members": members,
        "input_size": input_size,
        "horizon": H,
        **fields,
    }


class Days:
    """The scored days of one market: targets and weekly naive of the validation and test days."""

    def __init__(self, frame: pd.DataFrame, val_days: int):
        self.frame = frame
        self.bounds = protocol.epf_bounds(len(frame), val_days)
        y = frame["y"].to_numpy(dtype=np.float64)
        self.y = y
        self.origins = {part: protocol.epf_origins(*self.bounds[part]) for part in ("val", "test")}
        self.actual = {part: y[o[:, None] + np.arange(H)] for part, o in self.origins.items()}
        self.weekly = {part: protocol.epf_naive(y, *self.bounds[part], 168) for part in ("val", "test")}

    def scores(self, pred_test: np.ndarray, pred_val: np.ndarray) -> dict:
        """Test `metrics` and `val_*` fields of one forecast of every test and validation day."""
        test = protocol.score_epf(self.actual["test"], pred_test, self.weekly["test"])
        val = protocol.score_epf(self.actual["val"], pred_val, self.weekly["val"])
        return {"metrics": common.rounded(test), **common.val_fields(val)}

    def counts(self) -> dict:
        return {"days": len(self.origins["test"]), "val_days": len(self.origins["val"])}


def run_baselines(market: str, days: Days, input_size: int) -> list[dict]:
    out = []
    for name, lag in (("daily naive", 24), ("weekly naive", 168)):
        with common.timer() as t:
            pred = protocol.epf_naive(days.y, *days.bounds["test"], lag)
        pred_val = protocol.epf_naive(days.y, *days.bounds["val"], lag)
        out.append(
            line(
                market,
                name,
                input_size,
                **days.scores(pred, pred_val),
                train_s=0.0,
                predict_s=round(t[0], 3),
                peak_rss_mb=common.peak_rss_mb(),
                **days.counts(),
            )
        )
    return out


def run_ours(args, market: str, days: Days, variant: str, seeds, base: list[str], tmp: Path) -> list[dict]:
    """One line per seed (one model each) and, with several seeds, one for their ensemble."""
    path = tmp / f"epf_{market}_train.parquet"
    if not path.exists():  # what the model sees: every row before the test days, never one of them
        days.frame.iloc[: days.bounds["train"][1]].to_parquet(path, index=False)
    overrides = [
        "experiment=epf",
        f"data.path={path}",
        f"data.input_size={args.input_size}",
        f"data.val_size={args.val_days * H}",
        "data.test_size=0",  # the test days are cut by protocol, never handed to training
        *base,
    ]
    keys = set(common.compose(overrides, tmp).data.keys())
    overrides += variant_overrides(variant, market, keys)
    lines, preds, preds_val = [], [], []
    for seed in seeds:
        trained = common.train(overrides, seed, last_checkpoint=args.last_checkpoint)
        with common.timer() as t:
            pred = predict_days(trained.forecaster, days.frame, days.origins["test"], args.input_size)
        pred_val = predict_days(trained.forecaster, days.frame, days.origins["val"], args.input_size)
        preds.append(pred)
        preds_val.append(pred_val)
        lines.append(
            line(
                market,
                "lstm",
                args.input_size,
                variant=variant,
                **days.scores(pred, pred_val),
                train_s=round(trained.seconds, 1),
                predict_s=round(t[0], 2),
                peak_rss_mb=common.peak_rss_mb(),
                seed=seed,
                **common.fit_fields(trained),
                refit=False,
                **days.counts(),
                overrides=list(args.overrides),
            )
        )
    combinations = [("mean", common.mean_forecast), ("median", common.median_forecast)]
    for combine, how in combinations if len(seeds) > 1 else []:
        # How `ensemble.members=K ensemble.combine=<combine>` forecasts: its y_hat is the
        # combination of the members' medians (forecast.models.ensemble); its member i is the single
        # model of seed `seed + i`, weight for weight (tests/test_ensemble.py).
        lines.append(
            line(
                market,
                common.ensemble_name("lstm", len(seeds)),
                args.input_size,
                members=len(seeds),
                combine=combine,
                variant=variant,
                **days.scores(how(preds), how(preds_val)),
                train_s=round(sum(r["train_s"] for r in lines[: len(seeds)]), 1),
                predict_s=round(sum(r["predict_s"] for r in lines[: len(seeds)]), 2),
                peak_rss_mb=common.peak_rss_mb(),
                seeds=list(seeds),
                checkpoint=lines[0]["checkpoint"],
                refit=False,
                **days.counts(),
                overrides=list(args.overrides),
            )
        )
    return lines


def choice(market: str, input_size: int, by_variant: dict[str, dict]) -> dict:
    """The variant with the lowest validation MAE (first seed's single model): what the experiment
    adopts. `covariates_val_gain`: 1 - (best validation MAE with covariates) / (without)."""
    val = {v: r["val_mae"] for v, r in by_variant.items()}
    best = min(val, key=val.get)
    with_cov = [x for v, x in val.items() if v != "none"]
    gain = None
    if "none" in val and with_cov:
        gain = round(1 - min(with_cov) / val["none"], 4)
    return line(
        market, "choice", input_size, chosen=best, by="val_mae", val_mae=val, covariates_val_gain=gain
    )


# -- neuralforecast (a child process) --------------------------------------------------------------
def nf_worker(spec_path: Path) -> None:
    """In the neuralforecast interpreter: fit its LSTM once on the rows before the test days (the
    last `val_days` validating: its early stopping), then forecast every validation and test day
    from midnight without refitting (`cross_validation(use_fitted=True)`, step 24 h); writes the
    forecasts (days, 24) and the times to `spec["out"]`."""
    import time

    import torch

    spec = json.loads(spec_path.read_text())
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or 2))
    from neuralforecast import NeuralForecast
    from neuralforecast.losses.pytorch import MAE
    from neuralforecast.models import LSTM

    frame = pd.read_parquet(spec["data"])
    cols = ["unique_id", "ds", "y", *spec["futr_exog"]]
    frame = frame[cols]
    bounds = protocol.epf_bounds(len(frame), spec["val_days"])
    train = frame.iloc[: bounds["train"][1]]
    steps = spec["steps"]
    model = LSTM(
        h=H,
        input_size=spec["input_size"],
        futr_exog_list=spec["futr_exog"] or None,
        encoder_n_layers=2,
        encoder_hidden_size=128,
        loss=MAE(),
        scaler_type=common.NF_SCALER,
        windows_batch_size=spec["windows_batch_size"],
        max_steps=steps["max_steps"],
        val_check_steps=steps["val_every"],
        early_stop_patience_steps=steps["patience"] if steps["patience"] > 0 else -1,
        random_seed=spec["seed"],
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=False,
        accelerator="cpu",
    )
    nf = NeuralForecast(models=[model], freq="h")
    start = time.perf_counter()
    nf.fit(train, val_size=spec["val_days"] * H)
    fit_s = time.perf_counter() - start

    def days_of(df: pd.DataFrame, n_days: int) -> np.ndarray:
        cv = nf.cross_validation(df, n_windows=None, test_size=n_days * H, step_size=H, use_fitted=True)
        cv = cv.sort_values(["cutoff", "ds"])  # cutoff: 23:00 of the day before
        return cv["LSTM"].to_numpy(dtype=np.float64).reshape(-1, H)

    start = time.perf_counter()
    test = days_of(frame, protocol.EPF_TEST_DAYS)
    predict_s = time.perf_counter() - start
    val = days_of(train, spec["val_days"])
    np.save(spec["out"] + ".test.npy", test)
    np.save(spec["out"] + ".val.npy", val)
    trajectory = getattr(nf.models[0], "train_trajectories", None) or []  # (global step, loss) per step
    steps_taken = int(trajectory[-1][0]) + 1 if trajectory else 0
    print(json.dumps({"fit_s": fit_s, "predict_s": predict_s, "steps": steps_taken}), flush=True)


def run_neuralforecast(args, market: str, days: Days, steps: dict, batch_size: int, seed: int, tmp: Path):
    """neuralforecast's LSTM with the same covariates and protocol, its own settings, our windows
    per step, step budget and early stopping (one seed); a line, or None when it cannot run."""
    python, why = neuralforecast_python()
    if python is None:
        print(f"neuralforecast skipped: {why}", file=sys.stderr)
        return None
    data = tmp / f"epf_{market}_all.parquet"
    days.frame.to_parquet(data, index=False)  # its cross_validation cuts the windows; fit sees rows < test
    spec = {
        "data": str(data),
        "futr_exog": list(protocol.EPF_COVARIATES[market]),
        "val_days": args.val_days,
        "input_size": args.input_size,
        "steps": steps,
        "windows_batch_size": batch_size,
        "seed": seed,
        "out": str(tmp / f"nf_{market}"),
    }
    spec_path = tmp / f"nf_{market}.json"
    spec_path.write_text(json.dumps(spec))
    env = {**os.environ, "PYTHONPATH": str(common.REPO / "bench")}
    proc = subprocess.run(
        [python, str(Path(__file__).resolve()), "--nf-worker", str(spec_path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=common.REPO,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"neuralforecast failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    timing = json.loads([x for x in proc.stdout.splitlines() if x.startswith("{")][-1])
    pred = np.load(spec["out"] + ".test.npy")
    pred_val = np.load(spec["out"] + ".val.npy")
    if pred.shape != days.actual["test"].shape or pred_val.shape != days.actual["val"].shape:
        raise RuntimeError(f"neuralforecast returned {pred.shape} and {pred_val.shape}")
    version = subprocess.run(
        [python, "-c", "import neuralforecast; print(neuralforecast.__version__)"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    return line(
        market,
        "neuralforecast-lstm",
        args.input_size,
        variant="futr",
        **days.scores(pred, pred_val),
        train_s=round(timing["fit_s"], 1),
        predict_s=round(timing["predict_s"], 2),
        seed=seed,
        version=version,
        scaler=common.NF_SCALER,
        loss=common.NF_LOSS,
        windows_batch_size=batch_size,
        **steps,
        steps_taken=timing["steps"],
        checkpoint="last",
        refit=False,
        **days.counts(),
    )


# -- main ----------------------------------------------------------------------------------------
def write_tables(args, data: Path) -> None:
    if args.write_sample:
        frame = protocol.load_epf(data, "NP").iloc[-SAMPLE_DAYS * H :].reset_index(drop=True)
        frame = frame.astype({c: "float32" for c in protocol.EPF_COVARIATES["NP"]})  # whole MW
        frame.to_parquet(args.write_sample, index=False, compression="zstd")
        print(f"wrote {args.write_sample}: NP, {len(frame)} hours from {frame['ds'].iloc[0]}")
    if args.write_long:
        if len(args.markets) != 1:
            sys.exit("--write-long needs one market (--markets NP)")
        frame = protocol.load_epf(data, args.markets[0])
        frame.to_parquet(args.write_long, index=False)
        print(f"wrote {args.write_long}: {args.markets[0]}, {len(frame)} hours (the last 728 days: test)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common.add_common_args(parser)
    parser.add_argument(
        "--markets", nargs="+", choices=protocol.EPF_MARKETS, default=list(protocol.EPF_MARKETS)
    )
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--input-size", type=int, default=168)
    parser.add_argument("--val-days", type=int, default=protocol.EPF_VAL_DAYS)
    parser.add_argument("--no-baselines", action="store_true", help="skip the naive lines")
    parser.add_argument(
        "--write-long", type=Path, default=None, help="write one market's long table and exit"
    )
    parser.add_argument(
        "--write-sample", type=Path, default=None, help="write the embedded NP sample and exit"
    )
    parser.add_argument("--nf-worker", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.nf_worker:
        nf_worker(args.nf_worker)
        return
    data = common.data_dir(args.data)
    if args.write_sample or args.write_long:
        write_tables(args, data)
        return
    common.quiet(args.verbose)
    markets = args.markets[:1] if args.quick else args.markets
    variants = [v for v in args.variants if v != "futr+calendar"] if args.quick else args.variants
    seeds = common.seeds_of(args)
    base = [*(QUICK if args.quick else ()), *args.overrides]
    with tempfile.TemporaryDirectory(prefix="epf-") as tmp:
        for market in markets:
            days = Days(protocol.load_epf(data, market), args.val_days)
            if not args.no_baselines:
                for record in run_baselines(market, days, args.input_size):
                    common.emit(record)
            first: dict[str, dict] = {}
            for variant in variants:
                lines = run_ours(args, market, days, variant, seeds, base, Path(tmp))
                first[variant] = lines[0]
                for record in lines:
                    common.emit(record)
            chosen = choice(market, args.input_size, first)
            common.emit(chosen)
            if args.compare:
                cfg = common.compose(["experiment=epf", "data.path=unused", *base], Path(tmp))
                steps = common.budget(cfg)
                theirs = run_neuralforecast(
                    args, market, days, steps, int(cfg.data.batch_size), seeds[0], Path(tmp)
                )
                if theirs is None:
                    continue
                common.emit(theirs)
                ours = first[chosen["chosen"]]  # the variant chosen on validation, one model
                common.emit(
                    line(
                        market,
                        "ratio ours/neuralforecast-lstm",
                        args.input_size,
                        variant=ours["variant"],
                        seed=ours["seed"],
                        checkpoint=ours["checkpoint"],
                        **common.ratios(ours, theirs, KEYS),
                        **common.time_ratios(ours, theirs),
                    )
                )


if __name__ == "__main__":
    main()
