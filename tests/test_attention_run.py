"""A run of the attention model logs its attention weights as a plot, beside the forecasts."""

from __future__ import annotations

import numpy as np
import torch
from mlflow import MlflowClient
from omegaconf import open_dict
from pipeline_helpers import TINY_TRAIN
from test_configs import compose_train

from forecast.plotting import plot_attention
from forecast.publishing import publish
from forecast.training import fit, package


def test_attention_run_logs_its_weights(tmp_path, history, isolated_mlflow):
    overrides = [
        *TINY_TRAIN,
        f"data.path={history}",
        "model=attention",
        "model.attention=additive",
        "intervals=[]",
    ]
    cfg = compose_train(overrides, tmp_path / "out")
    with open_dict(cfg):
        del cfg["hydra"]  # as in the app, where HydraConfig holds it
    result = fit(cfg)
    forecaster = package(cfg, result.module, result.datamodule)  # what train() does after fit
    publish(cfg, result.run_id, forecaster, result.module, result.datamodule)
    artifacts = {a.path for a in MlflowClient().list_artifacts(result.run_id)}
    assert {"attention.png", "forecasts.png"} <= artifacts
    net = result.module.net.eval()
    batch = next(iter(result.datamodule.val_dataloader()))
    with torch.no_grad():
        weights = net.attention_weights(batch)  # (B, H, N): a distribution over the 4 segments
    assert weights.shape[1:] == (6, 4)
    torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:2]))


def test_attention_plot_has_one_panel_per_window():
    weights = np.random.default_rng(0).dirichlet(np.ones(7), size=(3, 24))  # (3, H, N)
    fig = plot_attention(weights, segment_len=24, titles=["a", "b", "c"])
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["a", "b", "c"]
    assert panels[0].get_xticklabels()[0].get_text() == "168"  # the oldest segment: 7 days back
