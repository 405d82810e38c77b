"""Trained models combined into one ensemble model, after the fact: the K best trials of a sweep
(`register=best:K`), or any models trained on the same data with the same windows.

Training K seeds at once (`ensemble.members=K`) builds the same net inside the training job
(`forecast.training`); this module starts from saved models instead. The combination is one
`Forecaster` whose net is a `forecast.models.ensemble.EnsembleNet`: every runtime forecasts it.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from forecast.calibration import window_residuals
from forecast.errors import ConfigError
from forecast.forecaster import Forecaster
from forecast.intervals import calibrate
from forecast.models.ensemble import DEFAULT_COMBINE, EnsembleNet, ensemble_params
from forecast.models.registry import ENSEMBLE
from forecast.short_history import calibrate_short_history

log = logging.getLogger(__name__)

# Settings every member must share to be forecast from the same scaled window.
_SAME = ("input_size", "horizon", "freq", "columns", "scaler", "quantiles", "missing", "covariates")


def combine_forecasters(forecasters: Sequence[Forecaster], combine: str = DEFAULT_COMBINE) -> Forecaster:
    """One model that forecasts the `combine` of `forecasters` (median or mean).

    The members must read and write alike (the settings in `_SAME`, the same scaler statistics:
    trained on the same data) and may differ in everything else (sizes, cells, seeds). The
    result has no intervals: calibrate them on the ensemble's own residuals (`calibrate_on`).
    """
    if not forecasters:
        raise ConfigError("an ensemble needs at least one model")
    first = forecasters[0].settings
    for i, other in enumerate(forecasters[1:], start=1):
        s = other.settings
        differs = [k for k in _SAME if getattr(s, k) != getattr(first, k)]
        a, b = forecasters[0].scaler.stats, other.scaler.stats
        if not a.index.equals(b.index) or not np.allclose(
            a.to_numpy(), b.to_numpy(), rtol=1e-6, equal_nan=True
        ):
            differs.append("scaler statistics (trained on other data)")
        if differs:
            raise ConfigError(
                f"model {i} cannot join model 0 in an ensemble: they differ in {', '.join(differs)}"
            )
    members, kinds = [], set()
    for f in forecasters:  # an ensemble among the models joins with its own members
        if f.settings.net == ENSEMBLE:
            members += [
                (f.settings.net_params["member_net"], dict(p), net)
                for p, net in zip(f.settings.net_params["members"], f.net.members, strict=True)
            ]
        else:
            members.append((f.settings.net, dict(f.settings.net_params), f.net))
        kinds.update(kind for kind, _, _ in members)
    if len(kinds) > 1:
        raise ConfigError(f"an ensemble's members are of one net kind, got {sorted(kinds)}")
    params = ensemble_params([p for _, p, _ in members], kinds.pop(), combine)
    net = EnsembleNet(nets=[n for _, _, n in members], **params)
    settings = dataclasses.replace(
        first, net=ENSEMBLE, net_params=params, config=_config(first.config, len(members), combine)
    )
    out = Forecaster(net, forecasters[0].scaler, settings, export=forecasters[0].export)
    return out


def _config(config: dict[str, Any] | None, members: int, combine: str) -> dict[str, Any] | None:
    """The saved options, with the ensemble's size: a warm start refits as many members."""
    if config is None:
        return None
    train = {**(config.get("train") or {}), "members": members, "combine": combine}
    return {**config, "train": train}


def calibrate_on(forecaster: Forecaster, dataset: Any, levels: Sequence[int], scale: str = "window") -> None:
    """Conformal intervals of `levels` from `forecaster`'s own residuals on `dataset` (the
    validation windows of the data it was trained on), as training calibrates a single model."""
    if not levels:
        forecaster.intervals = None
        return
    scores = window_residuals(forecaster, dataset, 4096, scale)
    forecaster.intervals = calibrate(scores, levels, "validation", scale)
    log.info("ensemble intervals %s%% calibrated on %d validation windows", list(levels), len(scores))


def data_module_of(forecaster: Forecaster) -> Any:
    """The data module a model was trained with, set up again from its saved options (its
    training data must still be where it was read from)."""
    from forecast.data.datamodule import SeriesDataModule

    config = forecaster.settings.config
    if not config:
        raise ConfigError("the model does not record the options it was trained with (saved before format 2)")
    dm = SeriesDataModule(**config["data"])
    dm.setup("fit")
    return dm


def validation_scores(forecaster: Forecaster, dm: Any) -> dict[str, float]:
    """The model's validation metrics (`val/*`), computed as training computes a checkpoint's."""
    import lightning as L

    from forecast.models.module import ForecastModule

    config = forecaster.settings.config or {}
    model = {k: v for k, v in (config.get("model") or {}).items() if k not in ("input_size", "horizon")}
    module = ForecastModule(dm.input_size, dm.horizon, **model, **dm.model_sizes())
    if forecaster.settings.net == ENSEMBLE:
        module.use_ensemble(forecaster.net, dict(forecaster.settings.net_params))
    else:
        module.net = forecaster.net
    trainer = L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    trainer.validate(module, datamodule=dm, verbose=False)
    return {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}


def ensemble_of_models(
    model_uris: Sequence[str],
    combine: str = DEFAULT_COMBINE,
    intervals: Sequence[int] = (),
    interval_scale: str = "window",
) -> tuple[Forecaster, dict[str, float], Any]:
    """Load logged or registered models, combine them, calibrate the ensemble's intervals (and
    short-history blend) on its own validation windows and score it there: (ensemble, val
    metrics, data module)."""
    from forecast.tracking.resolve import load_registered

    forecasters = [load_registered(uri)[0] for uri in model_uris]
    ensemble = combine_forecasters(forecasters, combine)
    dm = data_module_of(forecasters[0])
    calibrate_on(ensemble, dm.datasets["val"], intervals, interval_scale)
    calibrate_short_history(ensemble, dm)  # young series: the ensemble's own blend
    return ensemble, validation_scores(ensemble, dm), dm


def input_example(dm: Any, n: int = 2) -> Any:
    """A logged model's input example: the input window of the first `n` series (and their
    future rows, for future-known covariates)."""
    ids = dm.ids[:n]
    future = dm.covariates is not None and dm.covariates.needs_future
    history = dm.history("val", ids=ids, future=dm.covariates is not None)
    rows = dm.input_size + (dm.horizon if future else 0)
    c = dm.columns
    example = history.groupby(c.id_col, sort=False).tail(rows)
    return example.astype({c.target_col: "float64"}).reset_index(drop=True)
