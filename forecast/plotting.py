"""Pictures for the MLflow run page: a few series with their forecasts, attention weights."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # no display on servers and in CI

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from forecast.data.validation import ColumnSpec


def plot_forecasts(
    history: pd.DataFrame,
    forecast: pd.DataFrame,
    actual: pd.DataFrame | None = None,
    columns: ColumnSpec = ColumnSpec(),
    n_series: int = 4,
    context: int = 168,
) -> Figure:
    """History tail, forecast (and the truth when known) for the first `n_series` series."""
    c = columns
    ids = list(pd.unique(forecast[c.id_col]))[:n_series]
    fig, axes = plt.subplots(len(ids), 1, figsize=(10, 2.4 * len(ids)), squeeze=False)
    for ax, uid in zip(axes[:, 0], ids, strict=True):
        past = history[history[c.id_col] == uid].tail(context)
        ax.plot(past[c.time_col], past[c.target_col], color="black", lw=1, label="history")
        if actual is not None:
            truth = actual[actual[c.id_col] == uid]
            ax.plot(truth[c.time_col], truth[c.target_col], color="tab:green", lw=1, label="actual")
        fut = forecast[forecast[c.id_col] == uid]
        quantiles = [col for col in fut.columns if col.startswith("y_hat_q")]
        if quantiles:
            ax.fill_between(
                fut[c.time_col], fut[quantiles[0]], fut[quantiles[-1]], alpha=0.3, label="interval"
            )
        # Forecasts written before every model wrote y_hat have quantile columns only.
        point = "y_hat" if "y_hat" in fut else quantiles[len(quantiles) // 2]
        ax.plot(fut[c.time_col], fut[point], color="tab:blue", lw=1.2, label="forecast")
        ax.set_title(str(uid), fontsize=9)
        ax.tick_params(labelsize=7)
    axes[0, 0].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig


def plot_attention(weights: np.ndarray, segment_len: int = 1, titles: Sequence[str] = ()) -> Figure:
    """Attention weights (n, H, N) of n windows as heat maps: horizon step x input segment.

    The x axis counts input steps back from the forecast origin (the segment's start), so a
    row that lights up 24 steps back shows the decoder reading yesterday's same hour.
    """
    n, H, N = weights.shape
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.0), squeeze=False)
    for i, ax in enumerate(axes[0]):
        image = ax.imshow(weights[i], aspect="auto", cmap="viridis", vmin=0.0, interpolation="nearest")
        ticks = np.arange(N)
        ax.set_xticks(ticks, [str((N - t) * segment_len) for t in ticks], fontsize=6)
        ax.set_xlabel("input steps before the origin", fontsize=7)
        ax.set_ylabel("horizon step", fontsize=7)
        ax.tick_params(labelsize=6)
        ax.set_title(titles[i] if i < len(titles) else f"window {i}", fontsize=8)
        fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig
