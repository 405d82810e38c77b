"""What a finished training run leaves in MLflow: config, dataset, baseline, plots and the model
(registered when asked), or, when the server was lost, the same kept on disk to upload later."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import mlflow
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from forecast.console import run_link
from forecast.data.datamodule import SeriesDataModule
from forecast.data.windows import collate_batch
from forecast.errors import TrackingUnavailableError
from forecast.forecaster import Forecaster
from forecast.metrics import make_metrics, update_metrics
from forecast.models.module import ForecastModule
from forecast.plotting import plot_attention, plot_forecasts
from forecast.tracking import log_forecaster, register, use_store
from forecast.tracking.outage import UNPUBLISHED_DIR, ResilientMLFlowLogger, keep_unpublished
from forecast.tuning import STATE_TAG

# The training job's logger: its lines keep the name they had before publishing had a module.
log = logging.getLogger("forecast.training")


def seasonal_naive_metrics(dm: SeriesDataModule, split: str = "test") -> dict[str, float]:
    """The seasonal-naive floor on exactly the windows the model is scored on."""
    season = max(dm.season_length, 1)
    if season > dm.input_size:
        season = 1
    metrics = make_metrics(sync=False)
    # The whole split in this process (the training loaders may be sharded across DDP ranks).
    loader = DataLoader(dm.datasets[split], batch_size=dm.eval_batch_size, collate_fn=collate_batch)
    for batch in loader:
        loc, scale = batch["loc"][:, None], batch["scale"][:, None]
        x = batch["x"] * scale + loc  # (B, L) raw
        reps = -(-dm.horizon // season)
        y_hat = x[:, -season:].repeat(1, reps)[:, : dm.horizon]  # (B, H)
        update_metrics(metrics, y_hat, batch["y"] * scale + loc, batch["y_mask"], batch["mase_scale"])
    return {f"{split}/snaive_{k}": float(m.compute()) for k, m in metrics.items()}


def flatten(cfg: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as MLflow params: `data/input_size` for `data.input_size`."""
    out: dict[str, Any] = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}/"))
        else:
            out[name] = value
    return out


@dataclass
class Published:
    """What `publish` put where: for the end-of-training summary."""

    baseline: dict[str, float]
    split: str
    link: str
    version: str | None


def log_dataset(cfg: DictConfig, dm: SeriesDataModule) -> None:
    """The training data as the run's MLflow dataset input: name, source, digest, rows, series."""
    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.data.sources import LocalArtifactDatasetSource

    assert dm.arrays is not None and dm.ids is not None
    path, embedded = cfg.data.get("path"), cfg.data.get("dataset")
    if path:
        source, name = LocalArtifactDatasetSource(str(Path(path).resolve())), Path(path).stem
    else:
        source, name = CodeDatasetSource({"forecast.dataset": str(embedded)}), str(embedded or "frame")
    # Digest of what training read (values and series ids), not of the file's bytes: the same
    # table re-exported gives the same digest.
    digest = hashlib.sha256()
    values, step = dm.arrays.values, 1 << 24  # in slices: a mapped store's values may not fit in memory
    for start in range(0, len(values), step):
        digest.update(np.ascontiguousarray(values[start : start + step]).data)
    digest.update("\x00".join(map(str, dm.ids)).encode())
    dataset = MetaDataset(source=source, name=name, digest=digest.hexdigest()[:16])
    rows, series = int(dm.arrays.offsets[-1]), len(dm.ids)
    tags = {"rows": str(rows), "series": str(series)}
    try:
        mlflow.log_input(dataset, context="training", tags=tags)
    except mlflow.exceptions.MlflowException as err:
        # Two sweep workers on one SQLite store may insert the same dataset at once; MLflow's
        # check-then-insert loses the race with a UNIQUE error. The row exists now: link to it.
        if "UNIQUE constraint" not in str(err):
            raise
        mlflow.log_input(dataset, context="training", tags=tags)
    mlflow.set_tag("data_digest", dataset.digest)  # which data a refit saw, at a glance


@rank_zero_only
def publish(
    cfg: DictConfig, run_id: str, forecaster: Forecaster, module: ForecastModule, dm: SeriesDataModule
) -> Published:
    """Log config, dataset, baseline, plot and pyfunc model to the run; register it when asked."""
    uri = use_store(cfg.paths.root_dir)
    config_yaml = OmegaConf.to_yaml(cfg, resolve=True)
    version = None
    with mlflow.start_run(run_id=run_id) as run:
        mlflow.log_text(config_yaml, "config.yaml")
        log_dataset(cfg, dm)
        split = "test" if dm.test_size else "val"
        baseline = seasonal_naive_metrics(dm, split)
        mlflow.log_metrics(baseline)
        c, shown = dm.columns, dm.ids[:4]  # the plot's series: no need to forecast them all
        history = forecast_input(dm, split, shown)
        forecast = forecaster.predict(history)
        actual = dm.history(None, ids=shown).merge(forecast[[c.id_col, c.time_col]])
        past = history.merge(forecast[[c.id_col, c.time_col]], how="left", indicator=True)["_merge"]
        fig = plot_forecasts(history[(past == "left_only").to_numpy()], forecast, actual, c)
        mlflow.log_figure(fig, "forecasts.png")
        plt.close(fig)
        log_attention(module, dm)
        example = input_example(dm, history, shown[:2])
        info = log_forecaster(forecaster, example, extra_files={"config.yaml": config_yaml})
        mlflow.set_tag("model_uri", info.model_uri)
        log.info("logged model %s to run %s", info.model_uri, run_id)
        if cfg.get("optuna"):
            mlflow.set_tag(STATE_TAG, "COMPLETE")
        if cfg.get("register") is True:
            tags = {"run_id": run_id}
            if cfg.get("init_from"):
                tags["init_from"] = str(cfg.init_from)
            registered = register(info.model_uri, cfg.registry.name, cfg.registry.alias, tags=tags)
            version = f"models:/{cfg.registry.name}@{cfg.registry.alias} = version {registered.version}"
            mlflow.set_tag("registered_version", f"{cfg.registry.name}/{registered.version}")
    return Published(baseline, split, run_link(uri, run.info.experiment_id, run_id), version)


def log_attention(module: ForecastModule, dm: SeriesDataModule, n: int = 4) -> None:
    """An attention model's weights on its first `n` validation windows, as `attention.png`."""
    if not getattr(module.net, "has_attention", False):  # False too for a net kind without it
        return
    loader = dm.val_dataloader() if dm.val_size else dm.train_dataloader()
    batch = {k: v[:n].to(module.device) for k, v in next(iter(loader)).items() if torch.is_tensor(v)}
    with torch.no_grad():
        weights = module.net.eval().attention_weights(batch).cpu().numpy()  # (n, H, N)
    fig = plot_attention(weights, module.hparams.segment_len, [f"validation window {i}" for i in range(n)])
    mlflow.log_figure(fig, "attention.png")
    plt.close(fig)


def forecast_input(dm: SeriesDataModule, split: str, ids: Sequence) -> pd.DataFrame:
    """What a forecast at the start of `split` reads for `ids`: the history, with the covariate
    columns and, for future-known ones, each series' next `horizon` rows (target empty)."""
    return dm.history(split, ids=ids, future=dm.covariates is not None)


def input_example(dm: SeriesDataModule, history: pd.DataFrame, ids: Sequence) -> pd.DataFrame:
    """The logged model's input example: one input window of `ids` (and their future rows)."""
    c = dm.columns
    rows = dm.input_size + (dm.horizon if dm.covariates is not None and dm.covariates.needs_future else 0)
    example = history[history[c.id_col].isin(ids)].groupby(c.id_col, sort=False).tail(rows)
    return example.astype({c.target_col: "float64"}).reset_index(drop=True)


def keep_unpublished_run(
    cfg: DictConfig,
    logger: ResilientMLFlowLogger,
    forecaster: Forecaster,
    dm: SeriesDataModule,
    metrics: dict[str, float],
) -> TrackingUnavailableError:
    """The server was lost mid-run: save the model and the unlogged metrics beside the run's outputs."""
    out = OmegaConf.select(cfg, "paths.output_dir", throw_on_resolution_failure=False)
    folder = Path(out or Path(cfg.paths.log_dir) / f"run-{logger.run_id}") / UNPUBLISHED_DIR
    split = "test" if dm.test_size else "val"
    shown = dm.ids[:2]
    example = input_example(dm, forecast_input(dm, split, shown), shown)
    register = None
    if cfg.get("register") is True:
        register = {"name": cfg.registry.name, "alias": cfg.registry.alias}
    params = {k: str(v) for k, v in flatten(OmegaConf.to_container(cfg, resolve=True)).items()}
    return keep_unpublished(
        folder,
        logger,
        forecaster,
        example.reset_index(drop=True),
        OmegaConf.to_yaml(cfg, resolve=True),
        params,
        {**metrics, **seasonal_naive_metrics(dm, split)},
        register,
    )
