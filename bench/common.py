"""Shared helpers of the accuracy benchmarks (B1, B2): configs, timing, result lines.

Scripts put `bench/` on `sys.path` and `import common` (as they do `protocol`). Training goes
through the project's public path only: a composed `conf/train.yaml` (with an `experiment=`
bundle), `forecast.training.fit` and `forecast.training.build_forecaster`.

Honest evaluation (BENCHMARKS.md): every line carries validation figures (`val_*`) beside the
test ones (`metrics`), and says what it is: `members: 1` for one model (one seed), K for the
mean forecast of K seeds. The default is one seed; `--seeds 1 2 3` prints each seed's own line
and then the ensemble's.
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
# One model (one seed) per line by default; more seeds add an ensemble line beside theirs.
DEFAULT_SEEDS = (1,)

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
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=None,
        help="one single-model line per seed (default: 1); with two or more, also a line for "
        "their ensemble (the mean of their forecasts)",
    )
    parser.add_argument(
        "--last-checkpoint",
        action="store_true",
        help="keep our model's weights of the last training step instead of restoring the best "
        "validation checkpoint (what neuralforecast does: it early-stops but keeps its last weights)",
    )
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


def val_fields(metrics: dict[str, float] | None, digits: int = 4) -> dict[str, float | None]:
    """Validation figures as the line's `val_*` fields ({'smape': x} -> {'val_smape': x})."""
    return {f"val_{k}": (None if v is None else round(float(v), digits)) for k, v in (metrics or {}).items()}


def ratios(ours: dict[str, Any], theirs: dict[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    """Ours / theirs for the test `metrics` and the `val_*` fields, where both have them."""
    out: dict[str, Any] = {
        "metrics": {k: round(ours["metrics"][k] / theirs["metrics"][k], 3) for k in keys},
    }
    for k in keys:
        a, b = ours.get(f"val_{k}"), theirs.get(f"val_{k}")
        out[f"val_{k}"] = round(a / b, 3) if a is not None and b else None
    return out


def time_ratios(ours: dict[str, Any], theirs: dict[str, Any]) -> dict[str, float]:
    """Ours / theirs for `train_s` (each side's fit alone) and `predict_s`, for a ratio line."""
    return {k: round(ours[k] / max(theirs[k], 1e-9), 3) for k in ("train_s", "predict_s")}


def seeds_of(args: argparse.Namespace) -> tuple[int, ...]:
    """The seeds to train: --seeds, else one (seed 1)."""
    return tuple(args.seeds) if args.seeds else DEFAULT_SEEDS


def ensemble_name(model: str, members: int) -> str:
    """`lstm` for one model; `lstm, ensemble of 3` for the mean forecast of three seeds."""
    return model if members == 1 else f"{model}, ensemble of {members}"


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
    val: float | None  # the early-stopping metric's best value (`monitor`)
    steps: int = 0  # optimizer steps taken (early stopping may end before the budget)
    monitor: str | None = None
    checkpoint: str = "best"  # which weights forecast: best validation checkpoint | last step


def train(overrides: Sequence[str], seed: int, last_checkpoint: bool = False) -> Trained:
    """Fit one model from the composed config.

    `forecast.training.fit` restores the best validation checkpoint; `last_checkpoint=True`
    puts back the weights of the last step instead (the checkpoint callback's `last.ckpt`).
    `seconds` is the fit alone (data set-up, training, validation, restoring weights).
    """
    import torch

    from forecast.short_history import calibrate_short_history
    from forecast.training import build_forecaster, fit

    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        cfg = compose([*overrides, f"seed={seed}"], Path(tmp))
        start = time.perf_counter()
        result = fit(cfg)
        which = "best"
        if last_checkpoint:
            callback = getattr(result.trainer, "checkpoint_callback", None)
            last = getattr(callback, "last_model_path", "") or ""
            if not last:
                raise RuntimeError("--last-checkpoint needs the checkpoint callback with save_last: true")
            state = torch.load(last, map_location="cpu", weights_only=False)["state_dict"]
            result.module.load_state_dict(state)
            which = "last"
        seconds = time.perf_counter() - start
        forecaster = build_forecaster(result.module, result.datamodule)
        calibrate_short_history(forecaster, result.datamodule)  # as the saved model is (package)
    return Trained(
        forecaster,
        seconds,
        int(result.trainer.current_epoch),
        result.value,
        steps=int(result.trainer.global_step),
        monitor=cfg.get("optimized_metric"),
        checkpoint=which,
    )


def fit_fields(trained: Trained) -> dict[str, Any]:
    """What a line says about how its model was fitted: epochs, steps, weights, early stopping."""
    return {
        "epochs": trained.epochs,
        "steps": trained.steps,
        "checkpoint": trained.checkpoint,
        "monitor": trained.monitor,
        "monitor_best": None if trained.val is None else round(float(trained.val), 4),
    }


def budget(cfg: Any) -> dict[str, int]:
    """Our step budget and early stopping in steps, from a composed config: `max_steps`
    (max_epochs x limit_train_batches), `val_every` (one validation per "epoch" of
    limit_train_batches steps) and `patience` (validations without improvement)."""
    val_every = int(cfg.trainer.limit_train_batches)
    stopping = (cfg.get("callbacks") or {}).get("early_stopping") or {}
    return {
        "max_steps": int(cfg.trainer.max_epochs) * val_every,
        "val_every": val_every,
        "patience": int(stopping.get("patience", 0) or 0),
    }


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


def median_forecast(preds: Sequence[np.ndarray]) -> np.ndarray:
    """Seed ensemble as `ensemble.combine=median` combines one: the element-wise median of the
    members' forecasts."""
    return np.median(np.stack(preds), axis=0)


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


# neuralforecast's own settings for these tasks: its LSTM's defaults (robust scaler, MAE loss,
# validation loss = the training loss, encoder 2 x 128, MLP decoder 2 x 128, Adam at 1e-3), as in
# the reference figures of BENCHMARKS.md. Recorded on its lines.
NF_SCALER = "robust"
NF_LOSS = "mae"


def neuralforecast_version() -> str:
    import neuralforecast

    return str(getattr(neuralforecast, "__version__", "?"))


def neuralforecast_lstm(
    horizon: int, input_size: int, steps: dict[str, int], windows_batch_size: int, seed: int = 1
):
    """neuralforecast's LSTM with its own good settings (NF_SCALER, NF_LOSS, its defaults), our
    input size and horizon, our windows per step (`windows_batch_size`), our step budget and our
    early stopping in steps (`budget()`: a validation every `val_every` steps, stop after
    `patience` without improvement), on CPU.

    It keeps the weights of its last step: neuralforecast turns Lightning's checkpointing off
    and restores nothing (our `--last-checkpoint` does the same on our side).
    """
    from neuralforecast.losses.pytorch import MAE
    from neuralforecast.models import LSTM

    return LSTM(
        h=horizon,
        input_size=input_size,
        encoder_n_layers=2,
        encoder_hidden_size=128,
        loss=MAE(),
        scaler_type=NF_SCALER,
        windows_batch_size=windows_batch_size,
        max_steps=steps["max_steps"],
        val_check_steps=steps["val_every"],
        early_stop_patience_steps=steps["patience"] if steps["patience"] > 0 else -1,
        random_seed=seed,
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=False,
        accelerator="cpu",
    )


def neuralforecast_settings(steps: dict[str, int], windows_batch_size: int) -> dict[str, Any]:
    """What a neuralforecast line says about its run."""
    return {
        "version": neuralforecast_version(),
        "scaler": NF_SCALER,
        "loss": NF_LOSS,
        "windows_batch_size": windows_batch_size,
        **steps,
        "checkpoint": "last",
    }
