"""forecast from Python: fit, predict, cross-validate, save, load and register on a DataFrame.

    model = forecast.Model(horizon=48, input_size=168, freq="h", max_epochs=5)
    model.fit(df)                        # a long table: unique_id, ds, y (+ covariates)
    forecast_table = model.predict()     # the next 48 steps after each series' end
    cv = model.cross_validation(df, n_windows=3)
    model.save("my_model"); forecast.Model.load("my_model")   # or "models:/name@alias"

The model trains through the same job as `pipelines/train.py` (`forecast.training.run`), from
the same typed options (`forecast.config`): the same seed gives the same forecast from the API,
the command line and the MLflow pyfunc. No Hydra app or config files are involved.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd

from forecast.config import DataConfig, ModelConfig, TrainConfig
from forecast.errors import ConfigError
from forecast.jobs import job_config
from forecast.jobs import saved_options as _options  # re-exported: both moved to forecast.jobs

log = logging.getLogger(__name__)

_REMOTE = ("models:/", "runs:/")


class Model:
    """A recurrent forecasting model for many series (a global model), trained on a long table.

    Options come as the typed groups (`data=DataConfig(...)`, `model=ModelConfig(...)`,
    `train=TrainConfig(...)`) or as keywords of any of them (`horizon=24, hidden_size=64,
    max_epochs=5`); defaults are the command line's (conf/). After `fit`: `forecaster_` (the
    packaged model), `metrics_` (validation and test scores), `run_id_` and `model_uri_` (when
    tracked in MLflow).
    """

    def __init__(
        self,
        data: DataConfig | None = None,
        model: ModelConfig | None = None,
        train: TrainConfig | None = None,
        **options: Any,
    ) -> None:
        groups: dict[str, Any] = {
            "data": data or DataConfig(),
            "model": model or ModelConfig(),
            "train": train or TrainConfig(),
        }
        by_key: dict[str, dict[str, Any]] = {name: {} for name in groups}
        for key, value in options.items():
            # input_size and horizon are the data's (the model takes them from it)
            owner = next((n for n, g in groups.items() if key in type(g).keys()), None)
            if owner is None:
                valid = sorted({k for g in groups.values() for k in type(g).keys()})
                raise ConfigError(f"unknown option {key!r}; valid: {', '.join(valid)}")
            by_key[owner][key] = value
        self.data = DataConfig.parse({**groups["data"].to_dict(), **by_key["data"]})
        self.model = ModelConfig.parse({**groups["model"].to_dict(), **by_key["model"]})
        self.train = TrainConfig.parse({**groups["train"].to_dict(), **by_key["train"]})
        self.forecaster_: Any = None
        self.metrics_: dict[str, float] = {}
        self.run_id_: str | None = None
        self.model_uri_: str | None = None
        self._history: pd.DataFrame | None = None  # the table fit was given (predict() default)
        self._source: str | None = None  # or the path it read

    def __repr__(self) -> str:
        fitted = "fitted" if self.forecaster_ is not None else "not fitted"
        m, d = self.model, self.data
        sizes = f"hidden_size={m.hidden_size}, input_size={d.input_size}, horizon={d.horizon}"
        return f"Model({m.cell}, {sizes}; {fitted})"

    # -- training ----------------------------------------------------------------------------
    def fit(
        self,
        df: pd.DataFrame | str | Path,
        *,
        experiment: str | None = None,
        register: str | None = None,
        alias: str = "candidate",
        root_dir: str | Path = ".",
        init_from: Model | str | Path | None = None,
    ) -> Model:
        """Train on `df` (a long DataFrame, or a CSV / Parquet path): the last `data.test_size`
        steps of each series are held out for the test scores, the `data.val_size` before them
        choose the checkpoint (early stopping); `test_size=0` trains on all but validation.

        `experiment`: track the run in MLflow (the store of `root_dir`, or MLFLOW_TRACKING_URI)
        with the model logged; `register`: also register it under that name with `alias`.
        `init_from`: a warm start from a fitted `Model`, a saved folder or `models:/NAME@ALIAS`
        (its weights; the options must build the same net: `forecast.warm_start`).
        """
        from forecast.training import run

        if register and not experiment:
            experiment = "forecast"
        frame = None
        data = self.data
        if isinstance(df, pd.DataFrame):
            frame, data = df, replace(self.data, path=None, dataset=None)
        elif isinstance(df, str | Path):
            data = replace(self.data, path=str(df), dataset=None)
        else:
            raise ConfigError(f"fit takes a DataFrame or a file path, got {type(df).__name__}")
        with tempfile.TemporaryDirectory(prefix="forecast-fit-") as out:
            cfg = job_config(data, self.model, self.train, Path(out), root_dir, experiment, register, alias)
            init = init_from._fitted() if isinstance(init_from, Model) else None
            if init_from is not None and init is None:
                cfg.init_from = str(init_from)
            trained = run(cfg, frame=frame, init=init)
        self.forecaster_ = trained.forecaster
        self.metrics_ = trained.fit.metrics
        self.run_id_ = trained.fit.run_id
        self.model_uri_ = f"runs:/{self.run_id_}/model" if self.run_id_ else None
        if register:
            self.model_uri_ = f"models:/{register}@{alias}"
        self._history = frame if frame is not None else None
        self._source = None if frame is not None else str(df)
        return self

    # -- forecasting -------------------------------------------------------------------------
    def predict(self, df: pd.DataFrame | None = None, future: pd.DataFrame | None = None) -> pd.DataFrame:
        """The next `horizon` steps after the end of each series of `df` (default: the table
        `fit` was given). Columns: id, time, `y_hat`, then the model's quantiles and intervals
        (docs/batch.md, "Output columns"). A model with future-known covariates reads them from
        the rows after each history (target empty) or from `future`."""
        return self._fitted().predict(self._table(df), future)

    def cross_validation(
        self,
        df: pd.DataFrame | None = None,
        n_windows: int = 3,
        step: int | None = None,
        season_length: int | None = None,
        refit: str | int | None = None,
        refit_mode: str = "warm",
        refit_steps: int | None = None,
        refit_val_size: int | None = None,
        refit_lr: float | None = None,
    ) -> pd.DataFrame:
        """Rolling-origin forecasts at the last `n_windows` origins `step` apart (default: the
        horizon), beside the actuals (`y`) and the cutoff, as the backtest pipeline writes them.
        The scores (MAE, sMAPE, MASE, ... and the seasonal-naive baseline's) are in
        `cv_metrics_`.

        `refit=None` (or `"none"`): the fitted model forecasts every window as it is.
        `refit="every:N"` (or N): the model is trained again every N windows, each time on the
        data before the first of its windows' cutoffs only, with its own options, in this
        process (docs/evaluation.md, "Backtests that refit"); the table gains a `refit` column
        and `cv_refits_` lists each refit (origin, series, steps, seconds, best validation
        score). `refit_mode`: `warm` (from the previous refit, the first from this model) or
        `scratch` (fresh seeded weights); `refit_steps`: optimizer steps per refit at most
        (default 200, `forecast.backtest.REFIT_STEPS`); `refit_val_size`: the steps of each
        series that validate a refit, the last before its origin, and `refit_lr` its learning
        rate (defaults: the model's own)."""
        from forecast.backtest import backtest_frame, refit_plan
        from forecast.data.calendar import season_length_for

        plan = refit_plan(refit, refit_mode, refit_steps, refit_val_size, refit_lr)
        forecaster = self._fitted()
        m = season_length or self.data.season_length or season_length_for(forecaster.settings.freq)
        if plan is None:
            result = backtest_frame(forecaster, self._table(df), n_windows, step, m)
        else:
            from forecast.refit import refit_backtest

            result = refit_backtest(forecaster, self._table(df), n_windows, step, m, plan=plan)
        self.cv_metrics_ = result.metrics
        self.cv_refits_ = list(result.info.get("refits", []))
        return result.table

    # -- files and MLflow --------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the model as plain files (weights, scaler, settings with the options it was
        trained with; no pickles); `Model.load(path)` and the batch pipeline read them."""
        return self._fitted().save(path)

    @classmethod
    def load(cls, source: str | Path, runtime: str = "torch", root_dir: str | Path = ".") -> Model:
        """A saved folder, or a logged / registered model (`runs:/ID/model`, `models:/NAME@ALIAS`,
        `models:/NAME/VERSION`) from the MLflow store of `root_dir` (or MLFLOW_TRACKING_URI)."""
        from forecast.forecaster import Forecaster

        folder = Path(source)
        if str(source).startswith(_REMOTE):
            from forecast.tracking.resolve import resolve_model
            from forecast.tracking.store import use_store

            use_store(root_dir)
            folder, _ = resolve_model(str(source))
        forecaster = Forecaster.load(folder, runtime=runtime)  # type: ignore[arg-type]
        saved = getattr(forecaster.settings, "config", None)
        s = forecaster.settings  # a model saved before format 2 recorded its sizes only
        model = (
            cls(**_options(saved)) if saved else cls(input_size=s.input_size, horizon=s.horizon, freq=s.freq)
        )
        model.forecaster_ = forecaster
        if str(source).startswith(_REMOTE):
            model.model_uri_ = str(source)
        return model

    # -- helpers -----------------------------------------------------------------------------
    def _fitted(self) -> Any:
        if self.forecaster_ is None:
            raise ConfigError("the model is not fitted: call fit(df) or Model.load(path) first")
        return self.forecaster_

    def _table(self, df: pd.DataFrame | None) -> pd.DataFrame:
        if df is not None:
            return df
        if self._history is not None:
            return self._history
        if self._source:
            from forecast.data.io import read_table

            return read_table(self._source)
        raise ConfigError("give the history to forecast from: predict(df) (a loaded model keeps no data)")
