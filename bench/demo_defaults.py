"""The defaults of `conf/train.yaml` on the embedded data, checked on validation.

    python bench/demo_defaults.py                  # the default and one line per alternative
    python bench/demo_defaults.py --seeds 1 2 3    # each seed's own lines
    python bench/demo_defaults.py --quick          # two short fits (CI smoke run)

Every default a user gets without an `experiment=` (the early-stopping metric, RevIN, the linear
skip, segment-wise recurrence) must be supported by validation figures, not test ones
(`../shared/BENCHMARKS.md`, Honest evaluation). Each line is one model (`members: 1`) of the
default config with one override: `val_*` are the scores of the weights the run keeps (the best
validation checkpoint, re-validated), `metrics` the test scores, both on the raw scale (MAE,
RMSE, sMAPE, MASE over all validation / test windows of the 69 series). Compare lines on
`val_*`; the test figures are printed once, beside them.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402  (bench/ on sys.path first)

# One override per line (the default first): the choices conf/train.yaml and conf/model/lstm.yaml make.
VARIANTS: dict[str, list[str]] = {
    "default": [],
    "optimized_metric=val/mae": ["optimized_metric=val/mae"],
    "model.window_norm=false": ["model.window_norm=false"],
    "model.linear_skip=true": ["model.linear_skip=true"],
    "model.segment_len=1": ["model.segment_len=1"],
    # the rate decaying over the epochs (what B1 chose on its validation)
    "model.lr_schedule=cosine": ["model.lr_schedule=cosine"],
    # the demo's budget (issue 19: 30 epochs took minutes on a busy machine): fewer epochs
    "trainer.max_epochs=10": ["trainer.max_epochs=10"],
    "trainer.max_epochs=15": ["trainer.max_epochs=15"],
}
METRICS = ("mae", "rmse", "smape", "mase")


def fit_variant(overrides: list[str], seed: int) -> dict:
    """One fit of the default config plus `overrides`: validation and test scores of the kept weights."""
    from forecast.training import fit

    with tempfile.TemporaryDirectory(prefix="bench-demo-") as tmp:
        cfg = common.compose([*overrides, f"seed={seed}"], Path(tmp))
        start = time.perf_counter()
        result = fit(cfg)
        seconds = time.perf_counter() - start
        # fit() restored the best validation checkpoint into the module (it scored test with it);
        # validate those weights again so val_* belong to the model that the test line scores.
        (val,) = result.trainer.validate(result.module, datamodule=result.datamodule, verbose=False)
    return {
        "metrics": {k: round(result.metrics[f"test/{k}"], 4) for k in METRICS},
        **common.val_fields({k: val[f"val/{k}"] for k in METRICS}),
        "monitor": cfg.get("optimized_metric"),
        "epochs": int(result.trainer.current_epoch),
        "train_s": round(seconds, 1),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1], help="one line per seed and variant")
    parser.add_argument("--only", nargs="+", choices=list(VARIANTS), help="run these variants only")
    parser.add_argument("--quick", action="store_true", help="two variants, 2 short epochs (smoke run)")
    parser.add_argument("-v", "--verbose", action="store_true", help="show Lightning's logs")
    args = parser.parse_args(argv)
    common.quiet(args.verbose)
    names = args.only or (["default", "model.window_norm=false"] if args.quick else list(VARIANTS))
    budget = ["trainer.max_epochs=2", "trainer.limit_train_batches=5"] if args.quick else []
    for name in names:
        for seed in args.seeds:
            line = fit_variant([*VARIANTS[name], *budget], seed)
            common.emit(
                {
                    "dataset": "m4_hourly_sample",
                    "model": "lstm",
                    "members": 1,
                    "variant": name,
                    "seed": seed,
                    **line,
                    "peak_rss_mb": common.peak_rss_mb(),
                }
            )


if __name__ == "__main__":
    main()
