"""B4 recalibrated: EPF day-ahead prices with the model refit as the test period goes (BENCHMARKS.md).

    python bench/epf_recalibrated.py [--markets NP PJM BE] [--every 7] [--steps 200]
                                     [--refit-val-days 28] [--mode warm] [--seeds 1 2]
                                     [--no-trained-once] [--keep DIR] [--quick] [--data DIR]
                                     [--set KEY=VALUE ...]

LEAR and the DNN of Lago et al. (2021) are recalibrated every day. Here the model
(`experiment=epf`, the two day-ahead forecasts as future-known covariates) is refit every
`--every` days (7 by default: 156 refits over the 364 validation and 728 test days; every day would
be 1,092 per market and seed) through the product's own backtest with refits
(`forecast.refit.refit_backtest`, `pipelines/backtest.py refit=every:N`):

- The initial model trains on every row before the validation days (its last `--val-days`
  validating), so no validation or test day reaches it.
- Refit r trains on every row before its first day (midnight), starting from refit r - 1's weights
  (`--mode warm`; refit 0 from the initial model's) for at most `--steps` optimizer steps; its last
  `--refit-val-days` days before that midnight validate it (early stopping, the checkpoint kept,
  its intervals): they are the newest data it is scored on, never trained on.
- Each day d of the next `--every` days is forecast by that refit from the prices up to the end of
  d - 1 and the two forecasts up to the end of d, as in `bench/epf.py`; the scores are the
  protocol's (midnight origins only, the validation days and the test days apart).

Lines (one JSON line each; `metrics` = test, `val_*` = validation): `lstm` with `refit: "every 7
days, warm, 200 steps"` per seed (`members: 1`), their ensemble with two or more seeds (the mean
and the median of the seeds' forecasts: `combine`, `members: K`), recalibrated and never refit;
`lstm` with `refit: false` for the same initial model never refit (what the refits add); unless
`--no-trained-once`, `bench/epf.py`'s trained-once line (every row before the test days, the
validation days validating; `refit: false`). The refit settings are the product's defaults (200
steps, warm) and a validation stretch of four weeks, set before any run; the validation figures are
printed beside the test ones to choose between settings. `--keep DIR` keeps each seed's lines and
forecasts: seeds run in separate processes (one per core) with the same settings, then one run with
all the seeds reuses them and prints the ensemble.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import epf  # noqa: E402
import protocol  # noqa: E402

H = protocol.EPF_DAY
# CI budget: the initial model a few dozen steps, two refits of 5 steps over the last 14 days.
QUICK = ("trainer.max_epochs=2", "trainer.limit_train_batches=10", "++trainer.limit_val_batches=2")


def refit_label(args: argparse.Namespace) -> str:
    lr = "" if args.refit_lr is None else f", lr {args.refit_lr:g}"
    days = args.refit_val_days
    return f"every {args.every} days, {args.mode}, {args.steps} steps{lr}, last {days} days validate"


def initial_model(args, market: str, days: epf.Days, seed: int, base: list[str], tmp: Path):
    """The model the refits start from, trained as `pipelines/train.py experiment=epf` would on
    every row before the validation days (the last `--val-days` of them validating)."""
    from forecast.training import run

    val_start = days.bounds["val"][0]
    path = tmp / f"epf_{market}_before_val.parquet"
    if not path.exists():
        days.frame.iloc[:val_start].to_parquet(path, index=False)
    overrides = [
        "experiment=epf",
        f"data.path={path}",
        f"data.input_size={args.input_size}",
        f"data.val_size={args.val_days * H}",
        "data.test_size=0",
        *base,
    ]
    keys = set(common.compose(overrides, tmp).data.keys())
    overrides += epf.variant_overrides("futr", market, keys)
    cfg = common.compose([*overrides, f"seed={seed}"], tmp / f"initial-{market}-{seed}")
    start = time.perf_counter()
    trained = run(cfg)
    return trained.forecaster, time.perf_counter() - start


def day_forecasts(table, n_days: int) -> np.ndarray:
    """(n_days, 24) point forecasts of a backtest table with one window per day, oldest first."""
    ordered = table.sort_values(["cutoff", "ds"])
    pred = ordered["y_hat"].to_numpy(dtype=np.float64)
    assert len(pred) == n_days * H, (len(pred), n_days)
    return pred.reshape(n_days, H)


def run_seed(args, market: str, days: epf.Days, seed: int, base: list[str], tmp: Path) -> tuple[list, dict]:
    """The recalibrated line and the never-refit line of one seed, and the forecasts of each."""
    import torch

    from forecast.backtest import backtest_frame, refit_plan
    from forecast.refit import refit_backtest

    forecaster, initial_s = initial_model(args, market, days, seed, base, tmp)
    n_val, n_test = len(days.origins["val"]), len(days.origins["test"])
    n_days = n_val + n_test
    history = days.frame.iloc[: days.bounds["test"][1]]
    m = protocol.EPF_DAY
    plan = refit_plan(f"every:{args.every}", args.mode, args.steps, args.refit_val_days * H, args.refit_lr)
    start = time.perf_counter()
    result = refit_backtest(forecaster, history, n_days, H, m, plan=plan)
    refit_s = time.perf_counter() - start
    plain = backtest_frame(forecaster, history, n_days, H, m)
    lines, preds = [], {}
    for name, res in (("recalibrated", result), ("initial", plain)):
        pred = day_forecasts(res.table, n_days)
        first_cutoff = res.table["cutoff"].min()
        assert first_cutoff == days.frame["ds"].iloc[days.bounds["val"][0] - 1], first_cutoff
        preds[name] = pred
        refits = res.info.get("refits") or []
        extra = {}
        if refits:
            extra = {
                "refits": len(refits),
                "refit_steps_taken_mean": round(float(np.mean([r.steps for r in refits])), 1),
                "refit_s_mean": round(float(np.mean([r.seconds for r in refits])), 2),
                "refit_s_total": round(refit_s, 1),
            }
        lines.append(
            epf.line(
                market,
                "lstm",
                args.input_size,
                variant="futr",
                **days.scores(pred[n_val:], pred[:n_val]),
                train_s=round(initial_s, 1),
                predict_s=round(res.seconds, 2),  # the whole backtest (with the refits' training)
                peak_rss_mb=common.peak_rss_mb(),
                seed=seed,
                refit=refit_label(args) if name == "recalibrated" else False,
                initial="every row before the validation days",
                **extra,
                threads=torch.get_num_threads(),
                **days.counts(),
                overrides=list(args.overrides),
            )
        )
    return lines, preds


def _kept(args, market: str, seed: int) -> tuple[Path, Path]:
    return args.keep / f"{market}-seed{seed}.json", args.keep / f"{market}-seed{seed}.npz"


def kept_seed(args, market: str, seed: int) -> tuple[list | None, dict | None]:
    """A seed's lines and forecasts from an earlier run with the same settings (`--keep`), or
    (None, None): seeds run in separate processes (one per core) are combined by a last run."""
    if args.keep is None:
        return None, None
    lines_path, preds_path = _kept(args, market, seed)
    if not (lines_path.exists() and preds_path.exists()):
        return None, None
    kept = json.loads(lines_path.read_text())
    if kept["settings"] != settings_key(args):
        return None, None
    with np.load(preds_path) as arrays:
        return kept["lines"], {k: arrays[k] for k in arrays.files}


def keep_seed(args, market: str, seed: int, lines: list, preds: dict) -> None:
    if args.keep is None:
        return
    args.keep.mkdir(parents=True, exist_ok=True)
    lines_path, preds_path = _kept(args, market, seed)
    np.savez(preds_path, **preds)
    lines_path.write_text(json.dumps({"settings": settings_key(args), "lines": lines}))


def settings_key(args) -> list:
    """What a kept seed must have been run with to be reused."""
    return [refit_label(args), args.input_size, args.val_days, bool(args.quick), list(args.overrides)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common.add_common_args(parser)
    parser.add_argument(
        "--markets", nargs="+", choices=protocol.EPF_MARKETS, default=list(protocol.EPF_MARKETS)
    )
    parser.add_argument("--every", type=int, default=7, help="days between refits")
    parser.add_argument("--steps", type=int, default=200, help="optimizer steps per refit at most")
    parser.add_argument("--mode", choices=["warm", "scratch"], default="warm")
    parser.add_argument("--refit-val-days", type=int, default=28, help="days that validate each refit")
    parser.add_argument(
        "--refit-lr",
        type=float,
        default=None,
        help="the refits' learning rate (default: model.lr, the initial model's own)",
    )
    parser.add_argument("--input-size", type=int, default=168)
    parser.add_argument("--val-days", type=int, default=protocol.EPF_VAL_DAYS)
    parser.add_argument("--no-trained-once", action="store_true", help="skip bench/epf.py's line")
    parser.add_argument(
        "--keep",
        type=Path,
        default=None,
        help="folder keeping each seed's lines and forecasts: a later run with the same settings "
        "reuses them (seeds run in parallel processes, then combined)",
    )
    args = parser.parse_args(argv)
    if args.keep is not None and args.keep.exists() and not args.keep.is_dir():
        parser.error(f"--keep {args.keep} is a file: give a folder (kept seeds are written there)")
    common.quiet(args.verbose)
    data = common.data_dir(args.data)
    seeds = common.seeds_of(args)
    base = [*(QUICK if args.quick else ()), *args.overrides]
    if args.quick:
        args.steps, args.every = min(args.steps, 5), max(args.every, 182)
    markets = args.markets[:1] if args.quick else args.markets
    with tempfile.TemporaryDirectory(prefix="epf-recal-") as tmp:
        for market in markets:
            days = epf.Days(protocol.load_epf(data, market), args.val_days)
            if not args.no_trained_once:
                args.last_checkpoint = False
                for record in epf.run_ours(args, market, days, "futr", seeds[:1], base, Path(tmp)):
                    common.emit(record)
            by_seed = []
            for seed in seeds:
                lines, preds = kept_seed(args, market, seed)
                if lines is None:
                    lines, preds = run_seed(args, market, days, seed, base, Path(tmp))
                    keep_seed(args, market, seed, lines, preds)
                by_seed.append(preds)
                for record in lines:
                    common.emit(record)
            combinations = [("mean", common.mean_forecast), ("median", common.median_forecast)]
            ensembles = [(n, c, h) for n in ("recalibrated", "initial") for c, h in combinations]
            for name, combine, how in ensembles if len(seeds) > 1 else []:
                n_val = len(days.origins["val"])
                pred = how([p[name] for p in by_seed])
                common.emit(
                    epf.line(
                        market,
                        common.ensemble_name("lstm", len(seeds)),
                        args.input_size,
                        members=len(seeds),
                        combine=combine,
                        variant="futr",
                        **days.scores(pred[n_val:], pred[:n_val]),
                        seeds=list(seeds),
                        train_s=0.0,
                        predict_s=0.0,
                        peak_rss_mb=common.peak_rss_mb(),
                        refit=refit_label(args) if name == "recalibrated" else False,
                        **days.counts(),
                        overrides=list(args.overrides),
                    )
                )


if __name__ == "__main__":
    main()
