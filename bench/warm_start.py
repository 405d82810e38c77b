"""Does a warm start pay? A fine-tune from the champion against a model trained from scratch.

    python bench/warm_start.py [--market NP] [--months 1] [--seed 1] [--quick] [--data DIR]

The nightly loop's question (docs/batch.md): one more month of data has arrived; is fine-tuning
the champion on it as good as training again from scratch, and how much sooner? On B4's data
(`experiment=epf`, one market, the two day-ahead forecasts as covariates):

- the champion trains from scratch on every row before the last `--months` x 30 days before the
  test period (not timed: it exists when the month arrives);
- `scratch` trains from scratch on every row before the test period (the month included);
- `fine-tune` trains on the same rows, the same options and budget, starting from the champion's
  weights (`init_from`, `forecast.training.run(init=...)`).

Both validate on their data's last 364 days (the experiment's `data.val_size`), so the figures are
comparable: `val_mae` is the best validation MAE (the checkpoint kept). Printed per model, one
JSON line each: the wall time of the whole fit, the validation MAE after every epoch with the time
it was reached, and the protocol's test figures of the model kept (the 728 test days, midnight
origins; read once, not used). The last line, `warm start pays`, gives the time the fine-tune took
to reach the scratch model's best validation MAE, and its ratio to the scratch model's whole
training time (the target of issue 21: under 0.2).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from lightning.pytorch.callbacks import Callback
from omegaconf import open_dict

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import epf  # noqa: E402
import protocol  # noqa: E402

H = protocol.EPF_DAY
QUICK = ("trainer.max_epochs=2", "trainer.limit_train_batches=10", "++trainer.limit_val_batches=2")


class ValClock(Callback):
    """The validation MAE after every epoch, with the seconds since the fit started (class-level:
    Hydra instantiates it from the config, the script reads what it saw)."""

    seen: list[tuple[float, float]] = []
    started: float = 0.0
    ended: float = 0.0

    def on_fit_start(self, trainer, pl_module) -> None:
        ValClock.seen, ValClock.started = [], time.perf_counter()

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or "val/mae" not in trainer.callback_metrics:
            return
        ValClock.seen.append(
            (time.perf_counter() - ValClock.started, float(trainer.callback_metrics["val/mae"]))
        )

    def on_fit_end(self, trainer, pl_module) -> None:
        ValClock.ended = time.perf_counter() - ValClock.started


def config(args, market: str, frame, end: int, tmp: Path, name: str):
    """`pipelines/train.py experiment=epf` on every row before `end`, with the clock."""
    path = tmp / f"{market}_{name}.parquet"
    frame.iloc[:end].to_parquet(path, index=False)
    overrides = ["experiment=epf", f"data.path={path}", "data.test_size=0", *args.base]
    keys = set(common.compose(overrides, tmp).data.keys())
    overrides += epf.variant_overrides("futr", market, keys)
    cfg = common.compose([*overrides, f"seed={args.seed}"], tmp / name)
    with open_dict(cfg):
        cfg.callbacks.val_clock = {"_target_": f"{__name__}.ValClock"}
    return cfg


def fit_line(market: str, name: str, trained, days: epf.Days, seconds: float) -> dict:
    pred = epf.predict_days(trained.forecaster, days.frame, days.origins["test"], 168)
    test = protocol.score_epf(days.actual["test"], pred, days.weekly["test"])
    return epf.line(
        market,
        name,
        168,
        variant="futr",
        metrics=common.rounded(test),
        val_mae=round(float(trained.fit.value), 4),
        train_s=round(seconds, 1),
        predict_s=0.0,
        peak_rss_mb=common.peak_rss_mb(),
        fit_s=round(ValClock.ended, 1),
        steps=int(trained.fit.trainer.global_step),
        epochs=int(trained.fit.trainer.current_epoch),
        val_curve=[(round(t, 1), round(v, 4)) for t, v in ValClock.seen],
        refit=False,
    )


def main(argv: list[str] | None = None) -> None:
    from forecast.training import run

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common.add_common_args(parser)
    parser.add_argument("--market", choices=protocol.EPF_MARKETS, default="NP")
    parser.add_argument("--months", type=int, default=1, help="new data: this many 30-day months")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--fine-tune-lr", type=float, default=None, help="the fine-tune's model.lr (default: the recipe's)"
    )
    args = parser.parse_args(argv)
    common.quiet(args.verbose)
    args.base = [*(QUICK if args.quick else ()), *args.overrides]
    days = epf.Days(protocol.load_epf(common.data_dir(args.data), args.market), protocol.EPF_VAL_DAYS)
    test_start = days.bounds["test"][0]
    old_end = test_start - args.months * 30 * H
    with tempfile.TemporaryDirectory(prefix="warm-start-") as tmp:
        champion = run(config(args, args.market, days.frame, old_end, Path(tmp), "champion"))
        common.emit(
            fit_line(args.market, "champion (data to a month before)", champion, days, ValClock.ended)
        )
        lines = {}
        for name, init in (("scratch", None), ("fine-tune", champion.forecaster)):
            cfg = config(args, args.market, days.frame, test_start, Path(tmp), name)
            if init is not None and args.fine_tune_lr is not None:
                cfg.model.lr = args.fine_tune_lr
            start = time.perf_counter()
            trained = run(cfg, init=init)
            lines[name] = fit_line(args.market, name, trained, days, time.perf_counter() - start)
            common.emit(lines[name])
    target = lines["scratch"]["val_mae"]
    reached = next((t for t, v in lines["fine-tune"]["val_curve"] if v <= target), None)
    common.emit(
        {
            "dataset": "epf",
            "market": args.market,
            "model": "warm start pays",
            "input_size": 168,
            "horizon": H,
            "metrics": lines["fine-tune"]["metrics"],  # the fine-tune's test figures, as above
            "train_s": lines["fine-tune"]["fit_s"],
            "predict_s": 0.0,
            "peak_rss_mb": common.peak_rss_mb(),
            "scratch_val_mae": target,
            "fine_tune_val_mae": lines["fine-tune"]["val_mae"],
            "scratch_fit_s": lines["scratch"]["fit_s"],
            "fine_tune_fit_s": lines["fine-tune"]["fit_s"],
            "fine_tune_reaches_scratch_val_s": reached,
            "ratio": None if reached is None else round(reached / lines["scratch"]["fit_s"], 3),
            "target_ratio": 0.2,
            "months": args.months,
            "fine_tune_lr": args.fine_tune_lr,
            "seed": args.seed,
        }
    )


if __name__ == "__main__":
    main()
