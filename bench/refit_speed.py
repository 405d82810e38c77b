"""Speed of a backtest that refits (`forecast.refit`): N series x K windows, a refit every E windows.

    .venv/bin/python bench/refit_speed.py          # 1,000 series x 20 windows, every 5 (4 refits), warm
    .venv/bin/python bench/refit_speed.py --mode scratch --steps 200
    .venv/bin/python bench/refit_speed.py --net default    # the Model's default net instead
    .venv/bin/python bench/refit_speed.py --series 50 --windows 4 --every 2     # a quick check

The data is the seeded synthetic hourly set (`forecast.data.synthetic_long`, 720 steps per
series); the model a small one (one LSTM layer of 32 units, segments of 24, input 96, horizon 24,
intervals at 80 and 95), trained for one epoch of 100 batches on the whole table first (not
timed: it is the saved model being backtested; its options, 100 batches an epoch and patience 5
included, are the refits'). Then `refit_backtest` runs as `pipelines/backtest.py refit=every:E`
does, in this process: per refit the data before its origin, a training job without logger of
at most `--steps` steps (early stopping on its validation part may end it sooner), then every
window forecast by its refit and the table scored once. The same backtest without refits is
timed beside it.

Prints one JSON line: `series`, `windows`, `every`, `refits`, `mode`, `steps` (the budget) and
`steps_taken` per refit, `seconds_per_refit` (each training job, set-up included),
`refit_seconds_mean`, `total_s` (the whole refit backtest: windows, trainings, forecasts,
scores), `no_refit_s` (the same backtest of the saved model alone), `mase` and `mase_no_refit`
(a sanity check, not an accuracy figure: the saved model saw the whole table), `threads`
(torch's), `load_1m` (at the start and end) and `cpu` (the `Model name` line of `lscpu`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import time

LENGTH = 720  # steps per series: 20 windows of 24 and enough before the first refit's origin
MODEL = {
    "freq": "h",
    "input_size": 96,
    "horizon": 24,
    "season_length": 24,
    "hidden_size": 32,
    "num_layers": 1,
    "head_hidden": 32,
    "segment_len": 24,
    "batch_size": 256,
    "seed": 1,
    "enable_progress_bar": False,
}
NET_KEYS = ("hidden_size", "num_layers", "head_hidden", "segment_len")  # --net default drops them


def cpu_model() -> str:
    """The `Model name` line of lscpu (the processor name where there is no lscpu)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "?"
    lines = [" ".join(line.split()) for line in out.splitlines() if line.startswith("Model name")]
    return lines[0] if lines else "?"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--series", type=int, default=1000)
    parser.add_argument("--windows", type=int, default=20, help="cutoffs per series, a horizon apart")
    parser.add_argument("--every", type=int, default=5, help="refit every this many windows")
    parser.add_argument("--mode", choices=["warm", "scratch"], default="warm")
    parser.add_argument("--steps", type=int, default=None, help="steps per refit (default: REFIT_STEPS)")
    parser.add_argument(
        "--net",
        choices=["small", "default"],
        default="small",
        help="small: 1 LSTM layer of 32 units over segments of 24; default: the Model's own net",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    import torch

    import forecast
    from forecast.backtest import REFIT_STEPS, backtest_frame, refit_plan
    from forecast.data import synthetic_long
    from forecast.refit import refit_backtest

    load_start = os.getloadavg()[0]
    history = synthetic_long(n_series=args.series, length=LENGTH, seed=1)
    options = dict(MODEL)
    if args.net == "default":
        for key in NET_KEYS:
            options.pop(key)
    saved = forecast.Model(**options, max_epochs=1).fit(history)  # one epoch of 100 batches
    plan = refit_plan(f"every:{args.every}", args.mode, args.steps or REFIT_STEPS)
    assert plan is not None
    m = MODEL["season_length"]

    started = time.perf_counter()
    plain = backtest_frame(saved.forecaster_, history, args.windows, None, m)
    no_refit = time.perf_counter() - started
    started = time.perf_counter()
    result = refit_backtest(saved.forecaster_, history, args.windows, None, m, plan=plan)
    total = time.perf_counter() - started
    refits = result.info["refits"]
    assert len(result.table) == len(plain.table)
    record = {
        "series": args.series,
        "windows": args.windows,
        "every": args.every,
        "refits": len(refits),
        "mode": plan.mode,
        "net": args.net,
        "steps": plan.steps,
        "steps_taken": [r.steps for r in refits],
        "seconds_per_refit": [round(r.seconds, 2) for r in refits],
        "refit_seconds_mean": round(sum(r.seconds for r in refits) / len(refits), 2),
        "total_s": round(total, 2),
        "no_refit_s": round(no_refit, 2),
        "mase": round(result.metrics["mase"], 4),
        "mase_no_refit": round(plain.metrics["mase"], 4),
        "threads": torch.get_num_threads(),
        "load_1m": [round(load_start, 2), round(os.getloadavg()[0], 2)],
        "cpu": cpu_model(),
    }
    print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
