"""Shared helpers of the accuracy benchmarks (B1, B2): configs, timing, result lines.

Scripts put `bench/` on `sys.path` and `import common` (as they do `protocol`). Training goes
through the project's public path only: a composed `conf/train.yaml` (with an `experiment=`
bundle), `forecast.training.fit` and `forecast.training.build_forecaster`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
# `shared/data` beside the repository root, unless --data or FORECAST_BENCH_DATA says otherwise.
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

# Settings of the benchmark runs that are about the run, not the model: no MLflow, no progress
# bars; checkpoints go to a temporary folder (paths.output_dir, set per run).
BENCH_OVERRIDES = (
    "~logger",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
)


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """Options every accuracy script takes."""
    parser.add_argument("--data", type=Path, default=None, help="benchmark data folder")
    parser.add_argument("--quick", action="store_true", help="reduced budget for CI (< 60 s)")
    parser.add_argument(
        "--compare",
        choices=["neuralforecast"],
        default=None,
        help="also run neuralforecast's LSTM on the same data and print the ratios",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="override the seeds")
    parser.add_argument(
        "--set",
        dest="overrides",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="extra Hydra overrides for the model runs (ablations), e.g. model.window_norm=false",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show Lightning's logs")


def data_dir(arg: Path | None) -> Path:
    """--data, else FORECAST_BENCH_DATA, else shared/data beside the repository root."""
    path = arg or Path(os.environ.get("FORECAST_BENCH_DATA") or DEFAULT_DATA)
    if not path.is_dir():
        sys.exit(f"benchmark data folder not found: {path} (pass --data or set FORECAST_BENCH_DATA)")
    return path.resolve()


def quiet(verbose: bool) -> None:
    """Keep stdout for the JSON lines: Lightning's chatter goes away unless --verbose."""
    if verbose:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr)
        return
    import lightning  # noqa: F401  (it sets its loggers' levels on import: override after)

    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "forecast"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="lightning")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def emit(record: dict[str, Any]) -> None:
    """One result as one JSON line on stdout."""
    print(json.dumps(record), flush=True)


def rounded(metrics: dict[str, float], digits: int = 4) -> dict[str, float]:
    return {k: round(float(v), digits) for k, v in metrics.items()}


def compose(overrides: Sequence[str], output_dir: Path):
    """`conf/train.yaml` with overrides, as `pipelines/train.py` would see it."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = hydra_compose(
            config_name="train",
            overrides=[
                *BENCH_OVERRIDES,
                *overrides,
                f"paths.root_dir={output_dir}",
                f"paths.output_dir={output_dir}",
            ],
            return_hydra_config=True,
        )
    with open_dict(cfg):  # what a Hydra app's runtime would hold
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.runtime.cwd = str(output_dir)
    HydraConfig.instance().set_config(cfg)  # so that ${hydra:...} resolves
    return cfg


@dataclass
class Trained:
    """A fitted model of one seed, ready to forecast, and what it cost."""

    forecaster: Any  # forecast.forecaster.Forecaster
    seconds: float
    epochs: int
    val: float | None


def train(overrides: Sequence[str], seed: int) -> Trained:
    """Fit one model from the composed config (best validation checkpoint restored)."""
    from forecast.training import build_forecaster, fit

    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        cfg = compose([*overrides, f"seed={seed}"], Path(tmp))
        start = time.perf_counter()
        result = fit(cfg)
        seconds = time.perf_counter() - start
        forecaster = build_forecaster(result.module, result.datamodule)
    return Trained(forecaster, seconds, int(result.trainer.current_epoch), result.value)


@contextmanager
def timer() -> Iterator[list[float]]:
    """`with timer() as t: ...` then t[0] holds the seconds."""
    box = [0.0]
    start = time.perf_counter()
    try:
        yield box
    finally:
        box[0] = time.perf_counter() - start


def mean_forecast(preds: Sequence[np.ndarray]) -> np.ndarray:
    """Seed ensemble: the element-wise mean of the members' forecasts."""
    return np.mean(np.stack(preds), axis=0)


def neuralforecast_available() -> bool:
    try:
        import neuralforecast  # noqa: F401
    except ImportError:
        return False
    return True


def require_neuralforecast() -> None:
    if not neuralforecast_available():
        sys.exit(
            "--compare neuralforecast needs the optional bench extra: pip install -e '.[bench]' "
            "(neuralforecast>=3)"
        )


def neuralforecast_lstm(horizon: int, input_size: int, steps: int, loss: str, scaler: str, **extra: Any):
    """neuralforecast's LSTM as both accuracy benchmarks configure it: encoder 2 x 128, our input
    size, horizon, loss and step budget, early stopping every 100 steps (patience 5), seed 1, CPU."""
    from neuralforecast.losses.pytorch import MAE, MSE, SMAPE
    from neuralforecast.models import LSTM

    return LSTM(
        h=horizon,
        input_size=input_size,
        encoder_n_layers=2,
        encoder_hidden_size=128,
        loss={"mae": MAE, "mse": MSE, "smape": SMAPE}[loss](),
        scaler_type=scaler,
        max_steps=steps,
        val_check_steps=100,
        early_stop_patience_steps=5,
        random_seed=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=False,
        accelerator="cpu",
        **extra,
    )
