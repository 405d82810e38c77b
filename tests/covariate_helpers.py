"""Generated series whose target depends on covariates of every kind, and models built on them.

Shared by the inference tests (Forecaster, engines, pyfunc, end to end). Models are built
untrained (seeded): the tests check that every path computes the same numbers from the same
covariates, not how good they are.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from omegaconf import OmegaConf

from forecast.data import SeriesDataModule
from forecast.forecaster import Forecaster
from forecast.models import ForecastModule
from forecast.training import build_forecaster

L, H = 12, 4

# Each covariate kind as data-config keywords (the SeriesDataModule arguments).
KINDS: dict[str, dict] = {
    "futr": {"futr_exog": ["price"]},
    "futr_cat": {"futr_exog": ["promo"], "categorical": ["promo"]},
    "hist": {"hist_exog": ["load"]},
    "hist_cat": {"hist_exog": ["weather"], "categorical": ["weather"]},
    "static": {"static": ["size"]},
    "static_cat": {"static": ["store"], "categorical": ["store"]},
    "calendar": {"calendar": ["hour", "dayofweek"]},
}
ALL = {
    "futr_exog": ["price", "promo"],
    "hist_exog": ["load", "weather"],
    "static": ["size", "store"],
    "categorical": ["promo", "weather", "store"],
    "calendar": ["hour"],
}
FUTR = ["price", "promo"]


def covariate_frame(n_series: int = 5, length: int = 60, seed: int = 0) -> pd.DataFrame:
    """Hourly series: y = level + 2 price + 3 [promo == b] + 0.5 load + daily cycle + noise,
    with a past-only categorical `weather`, static `size` (numeric) and `store` (categorical)."""
    rng = np.random.default_rng(seed)
    parts = []
    for i in range(n_series):
        ds = pd.date_range("2024-01-01", periods=length, freq="h")
        price = rng.normal(size=length)
        promo = rng.choice(["a", "b", "c"], size=length)
        load = rng.normal(size=length)
        weather = rng.choice(["sun", "rain"], size=length)
        y = 10 + i + 2 * price + 3 * (promo == "b") + 0.5 * load + np.sin(2 * np.pi * ds.hour / 24)
        parts.append(
            pd.DataFrame(
                {
                    "unique_id": f"s{i}",
                    "ds": ds,
                    "y": y + rng.normal(0, 0.1, length),
                    "price": price,
                    "promo": promo,
                    "load": load,
                    "weather": weather,
                    "size": float(10 * (i + 1)),
                    "store": ["big", "small", "mid"][i % 3],
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


def build(frame: pd.DataFrame, seed: int = 0, **covariates) -> Forecaster:
    """An untrained (seeded) segment-wise LSTM with these covariates, packaged as a Forecaster."""
    dm = SeriesDataModule(frame=frame, freq="h", input_size=L, horizon=H, val_size=2 * H, **covariates)
    dm.setup()
    torch.manual_seed(seed)
    module = ForecastModule(
        input_size=L,
        horizon=H,
        hidden_size=8,
        head_hidden=8,
        segment_len=4,
        covariates=None if dm.covariates is None else dm.covariates.dims,
    )
    with torch.no_grad():  # larger weights than the init's, so every input visibly moves the output
        for p in module.net.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return build_forecaster(module, dm)


def split(frame: pd.DataFrame, cut: int, horizon: int = H) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(history: each series' first `cut` rows, future: its next `horizon` rows, all columns)."""
    within = frame.groupby("unique_id").cumcount()
    return frame[within < cut].reset_index(drop=True), frame[
        (within >= cut) & (within < cut + horizon)
    ].reset_index(drop=True)


def with_future_rows(history: pd.DataFrame, future: pd.DataFrame) -> pd.DataFrame:
    """One long table: the history, then each series' future rows with the target (and the
    past-only columns) empty, grouped by series."""
    ahead = future.assign(y=np.nan)
    for col in ("load", "weather"):
        if col in ahead:
            ahead[col] = None
    table = pd.concat([history, ahead], ignore_index=True)
    return table.sort_values(["unique_id", "ds"], kind="stable", ignore_index=True)


MODEL_CONF = Path(__file__).resolve().parents[1] / "conf" / "model"


def model_config(name: str) -> dict:
    """conf/model/<name>.yaml with its defaults merged (the files chain through `defaults`)."""
    if name == "base":  # the typed schema every file starts from (forecast.config)
        from forecast.config import ModelConfig

        return OmegaConf.to_container(OmegaConf.structured(ModelConfig))
    cfg = OmegaConf.load(MODEL_CONF / f"{name}.yaml")
    merged = OmegaConf.create()
    for parent in cfg.pop("defaults", []):
        if parent != "_self_":
            merged = OmegaConf.merge(merged, model_config(parent))
    return OmegaConf.to_container(OmegaConf.merge(merged, cfg), resolve=False)
